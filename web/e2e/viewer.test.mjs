// @ts-check
// A viewer key: signs in by pasting it, sees no edit buttons anywhere, and the server refuses a
// write anyway (PERMISSION_DENIED, shown cleanly). The workspace switcher lists both keys.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, shot } from "./browser.mjs";
import { makeWorkflow } from "./fixtures.mjs";
import { startStack } from "./stack.mjs";

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;
/** @type {Awaited<ReturnType<typeof launch>>} */
let b;
let viewerKey = "";
const ids = { agentId: "", agentName: "", workflowId: "" };

before(async () => {
  stack = await startStack();
  Object.assign(ids, await makeWorkflow(stack, { name: "viewer-crew", steps: 2 }));
  const k = await stack.rest("POST", "/v1/apiKeys", { name: "viewer", role: "ROLE_VIEWER" });
  assert.equal(k.status, 200, JSON.stringify(k.json));
  viewerKey = k.json.key;
  b = await launch();
});
after(async () => {
  await b?.close();
  await stack?.stop();
});

test("the server refuses a viewer's write", async () => {
  const r = await stack.rest("POST", "/v1/agents", { role: "r", goal: "g", backstory: "b" }, viewerKey);
  assert.equal(r.status, 403);
  assert.match(JSON.stringify(r.json), /role viewer may not call CreateAgent/);
});

test("a viewer signs in with a pasted key and sees no edit controls", async () => {
  const { page } = b;
  await page.goto(stack.origin);
  await page.getByRole("heading", { name: "Sign in to AGENTZ" }).waitFor();
  await shot(page, "signin");
  await page.getByRole("textbox", { name: "API key" }).fill("agz_wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(/The key was refused/).waitFor();
  await page.getByRole("textbox", { name: "API key" }).fill(viewerKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Agents" }).waitFor();
  await page.getByText("viewer", { exact: true }).waitFor();
  assert.equal(await page.getByRole("link", { name: "New agent" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "API keys" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Secrets" }).count(), 0);
  await shot(page, "viewer-agents");
  await page.goto(new URL(`/agents/${ids.agentId}`, stack.origin).toString());
  await page.getByRole("heading", { name: ids.agentName }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Edit" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Delete" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Clear memory" }).count(), 0);
  await page.goto(new URL(`/workflows/${ids.workflowId}`, stack.origin).toString());
  await page.locator(".step-node").first().waitFor();
  assert.equal(await page.locator(".palette").count(), 0);
  assert.equal(await page.getByRole("button", { name: /Save as new version|Run/ }).count(), 0);
  assert.ok(await page.getByRole("textbox", { name: "Name" }).isDisabled());
  await shot(page, "viewer-builder");
  await page.goto(new URL("/agents/new", stack.origin).toString());
  await page.getByText("Your role cannot create agents").waitFor();
  await page.goto(new URL("/keys", stack.origin).toString());
  await page.getByText("API keys need the admin role.").waitFor();
});

test("the workspace switcher switches between the saved keys", async () => {
  const { page } = b;
  await page.goto(`${stack.origin}/agents#token=${stack.token}`);
  await page.getByText("owner", { exact: true }).waitFor();
  const options = await page.getByRole("combobox", { name: "Workspace" }).locator("option").allTextContents();
  assert.equal(options.length, 2);
  assert.ok(options.some((o) => o.includes("viewer")) && options.some((o) => o.includes("owner")));
  const viewerOption = options.find((o) => o.includes("viewer")) ?? "";
  await page.getByRole("combobox", { name: "Workspace" }).selectOption({ label: viewerOption });
  await page.getByText("viewer", { exact: true }).waitFor();
  assert.equal(await page.getByRole("link", { name: "New agent" }).count(), 0);
});
