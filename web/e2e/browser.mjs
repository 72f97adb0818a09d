// @ts-check
// Debian's Chromium driven by playwright-core (no browser download): a fresh profile per
// launch, headless, no network chatter of its own.
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = resolve(WEB, "..");
export const OUT = join(WEB, "e2e", "out");
/** Screenshots of the screens, linked from docs/ui.md. */
export const SHOTS = join(WEB, "e2e", "screenshots");

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/**
 * @param {{ width?: number, height?: number, colorScheme?: "light" | "dark" }} [opts]
 */
export async function launch(opts = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  const profile = mkdtempSync(join(tmpdir(), "agentz-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: opts.width ?? 1280, height: opts.height ?? 800 },
    colorScheme: opts.colorScheme ?? "light",
  });
  /** @type {string[]} */
  const problems = [];
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  return {
    context,
    page,
    problems,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Saves a screenshot of the page as <dir>/<name>.png: e2e/screenshots/ (linked from docs/ui.md) for the
 * screens of the real stack, e2e/out/ for checks that run without a server.
 * @param {import("playwright-core").Page} page
 * @param {string} name
 * @param {string} [dir]
 */
export async function shot(page, name, dir = SHOTS) {
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: false });
}
