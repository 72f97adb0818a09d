// @ts-check
// Serves web/dist the way the gateway contract says the gateway does (SPA fallback, immutable
// /assets/, the gateway's CSP, /ui/config.json), for checking the bundle itself in a browser.
// It answers no API call: that is the gateway's job, tested against the real stack.
import { createServer } from "node:http";
import { readFileSync, existsSync, statSync } from "node:fs";
import { extname, join, normalize } from "node:path";

export const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml" };

/** @param {string} dist @returns {Promise<{ url: string, close: () => Promise<void> }>} */
export function serveDist(dist) {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    res.setHeader("content-security-policy", CSP);
    res.setHeader("x-content-type-options", "nosniff");
    if (url.pathname === "/ui/config.json") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ version: "0.1.0", clerkPublishableKey: null }));
      return;
    }
    if (req.method !== "GET") {
      res.statusCode = 404;
      res.end();
      return;
    }
    const rel = normalize(url.pathname).replace(/^(\.\.[/\\])+/, "");
    let file = join(dist, rel);
    if (!existsSync(file) || statSync(file).isDirectory()) file = join(dist, "index.html");
    if (rel.startsWith("/assets/")) res.setHeader("cache-control", "public, max-age=31536000, immutable");
    else res.setHeader("cache-control", "no-cache");
    res.setHeader("content-type", TYPES[/** @type {keyof typeof TYPES} */ (extname(file))] ?? "application/octet-stream");
    res.end(readFileSync(file));
  });
  return new Promise((ok) =>
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      const port = typeof a === "object" && a ? a.port : 0;
      ok({ url: `http://127.0.0.1:${port}`, close: () => new Promise((done) => server.close(() => done())) });
    }),
  );
}
