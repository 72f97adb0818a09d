// @ts-check
// Clerk configured (AGENTZ_CLERK_PUBLISHABLE_KEY) but its Frontend API out of reach, as on a
// machine without Internet access or when Clerk is down: the sign-in screen offers both ways at
// once, an API key (here the #token= link) signs in without waiting for Clerk, and Clerk's
// chunk is fetched only because a key is configured.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, shot } from "./browser.mjs";
import { startStack } from "./stack.mjs";

// A publishable key is "pk_test_" + base64("<frontend API host>$"); this host never resolves.
const PK = `pk_test_${Buffer.from("clerk.agentz-e2e.invalid$").toString("base64")}`;

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;
/** @type {Awaited<ReturnType<typeof launch>>} */
let b;
/** @type {string[]} */
const scripts = [];

before(async () => {
  stack = await startStack({ env: { AGENTZ_CLERK_PUBLISHABLE_KEY: PK } });
  b = await launch();
  b.page.on("request", (r) => {
    if (r.resourceType() === "script") scripts.push(new URL(r.url()).pathname);
  });
});
after(async () => {
  await b?.close();
  if (stack) assert.equal(await stack.stop(), 0, "agentzd exits 0 on SIGTERM");
});

test("the gateway hands the UI the publishable key", async () => {
  const r = await fetch(`${stack.origin}/ui/config.json`);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).clerkPublishableKey, PK);
});

test("without a credential the sign-in screen shows Clerk's place and the API key form at once", async () => {
  const { page } = b;
  const t0 = Date.now();
  await page.goto(stack.origin);
  await page.getByRole("heading", { name: "Sign in to AGENTZ" }).waitFor({ timeout: 5000 });
  await page.getByRole("heading", { name: "With your account" }).waitFor({ timeout: 5000 });
  await page.getByRole("textbox", { name: "API key" }).waitFor({ timeout: 5000 });
  assert.ok(Date.now() - t0 < 5000, "the screen does not wait for Clerk");
  await shot(page, "signin-clerk");
  assert.ok(
    scripts.some((s) => /clerk/i.test(s)),
    `Clerk's chunk is loaded when a key is configured (scripts: ${scripts.join(", ")})`,
  );
});

test("the #token= link signs in without waiting for Clerk, which never loads", async () => {
  const { page } = b;
  await page.goto("about:blank");
  const t0 = Date.now();
  await page.goto(stack.uiUrl);
  await page.getByRole("heading", { name: "Agents" }).waitFor({ timeout: 5000 });
  assert.ok(Date.now() - t0 < 5000, `signed in after ${Date.now() - t0} ms`);
  await page.getByText("owner", { exact: true }).waitFor();
  // And a reload restores the saved key just as fast.
  const t1 = Date.now();
  await page.reload();
  await page.getByRole("heading", { name: "Agents" }).waitFor({ timeout: 5000 });
  assert.ok(Date.now() - t1 < 5000, `restored after ${Date.now() - t1} ms`);
});
