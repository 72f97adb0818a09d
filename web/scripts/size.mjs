// Checks the first-load JavaScript budget of the built app: the entry chunk of dist/index.html
// and every chunk it imports statically (what the browser must fetch before the first screen),
// gzipped at level 9. Lazy routes, charts and Clerk are dynamic imports and not counted.
// Fails above 300 kB (300,000 bytes). Prints the figure for docs/performance.md.
import { readFileSync, existsSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const BUDGET = 300_000;
const dist = resolve(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const manifestPath = join(dist, ".vite", "manifest.json");
if (!existsSync(manifestPath)) {
  console.error("size: dist/.vite/manifest.json is missing; run npm run build first");
  process.exit(1);
}
/** @type {Record<string, {file: string, isEntry?: boolean, imports?: string[], dynamicImports?: string[], css?: string[]}>} */
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
const entries = Object.entries(manifest).filter(([, c]) => c.isEntry);
if (entries.length !== 1) {
  console.error(`size: expected one entry chunk, found ${entries.length}`);
  process.exit(1);
}
const seen = new Set();
/** @type {string[]} */
const js = [];
const css = new Set();
/** @param {string} key */
const walk = (key) => {
  if (seen.has(key)) return;
  seen.add(key);
  const c = manifest[key];
  if (!c) return;
  js.push(c.file);
  for (const f of c.css ?? []) css.add(f);
  for (const i of c.imports ?? []) walk(i);
};
walk(entries[0][0]);
/** @param {string} f */
const gz = (f) => gzipSync(readFileSync(join(dist, f)), { level: 9 }).length;
let total = 0;
for (const f of js) {
  const n = gz(f);
  total += n;
  console.log(`  ${f}  ${(n / 1000).toFixed(1)} kB gzip`);
}
let cssTotal = 0;
for (const f of css) cssTotal += gz(f);
const html = gz("index.html");
console.log(`first-load JS: ${(total / 1000).toFixed(1)} kB gzip in ${js.length} files (budget ${BUDGET / 1000} kB); CSS ${(cssTotal / 1000).toFixed(1)} kB; index.html ${(html / 1000).toFixed(1)} kB`);
if (total > BUDGET) {
  console.error(`size: first-load JS ${total} bytes gzip is over the ${BUDGET}-byte budget`);
  process.exit(1);
}
