// @ts-check
// The built bundle in a real browser under the gateway's CSP: it loads without a CSP violation
// or script error, takes the #token= fragment (stored, stripped from the address), and shows
// the sign-in screen at desktop and phone widths when no server accepts the token.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { launch, OUT, shot, WEB } from "./browser.mjs";
import { serveDist } from "./static-server.mjs";

test("the bundle runs under the gateway CSP and handles #token=", async () => {
  const srv = await serveDist(join(WEB, "dist"));
  const b = await launch();
  try {
    /** @type {string[]} */
    const csp = [];
    b.page.on("console", (m) => {
      if (/Content Security Policy|Refused to/.test(m.text())) csp.push(m.text());
    });
    await b.page.goto(`${srv.url}/runs/abc#token=agz_local_test_key`);
    await b.page.getByRole("heading", { name: "Sign in to AGENTZ" }).waitFor();
    assert.equal(new URL(b.page.url()).hash, "", "the token is stripped from the address");
    assert.equal(new URL(b.page.url()).pathname, "/runs/abc", "the route is kept");
    const stored = await b.page.evaluate(() => localStorage.getItem("agentz.credentials.v1") ?? "");
    assert.match(stored, /agz_local_test_key/);
    // A second #token= in the same tab (only the fragment changes, no reload) is taken too.
    await b.page.evaluate(() => {
      window.location.hash = "token=agz_second_key";
    });
    await b.page.waitForFunction(() => window.location.hash === "" && (localStorage.getItem("agentz.credentials.v1") ?? "").includes("agz_second_key"));
    // No server answers WhoAmI here, so the screen says why instead of pretending to be signed in.
    await b.page.getByRole("alert").first().waitFor();
    assert.deepEqual(csp, []);
    assert.deepEqual(b.problems.filter((p) => !/Failed to load resource/.test(p)), []);
    await shot(b.page, "bundle-signin", OUT);
    await b.page.setViewportSize({ width: 375, height: 812 });
    const overflow = await b.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `no horizontal scroll at 375 px (overflow ${overflow})`);
    // The sign-in form is reachable by keyboard: the key field has a label.
    await b.page.getByRole("textbox", { name: "API key" }).fill("agz_x");
    assert.equal(await b.page.getByRole("button", { name: "Sign in" }).isEnabled(), true);
    await shot(b.page, "bundle-signin-phone", OUT);
  } finally {
    await b.close();
    await srv.close();
  }
});
