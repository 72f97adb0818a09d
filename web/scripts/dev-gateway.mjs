// @ts-nocheck -- a development tool on node:http2 callbacks; not part of the app or the tests.
// A development stand-in for agentz-gateway's browser half, for working on the UI against a
// real agentzd before (or without) the gateway: serves web/dist like the gateway (SPA fallback,
// the CSP, /ui/config.json) and relays grpc-web calls to agentzd's gRPC port over HTTP/2,
// turning the trailers into the grpc-web trailer frame. It does not do REST or SSE.
//
//   node scripts/dev-gateway.mjs --grpc 127.0.0.1:50051 [--listen 127.0.0.1:8080]
//
// Prints "web UI: http://HOST:PORT/#token=KEY" when --token (or AGENTZ_TOKEN) is given.
import { createServer } from "node:http";
import { connect } from "node:http2";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const grpc = opt("--grpc", "127.0.0.1:50051");
const [host, portText] = opt("--listen", "127.0.0.1:8080").split(":");
const token = opt("--token", process.env.AGENTZ_TOKEN ?? "");
const dist = resolve(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".json": "application/json" };

let h2 = null;
const session = () => {
  if (!h2 || h2.closed || h2.destroyed) {
    h2 = connect(`http://${grpc}`);
    h2.on("error", () => (h2 = null));
  }
  return h2;
};

/** The grpc-web trailer frame: flag 0x80, length, "name: value\r\n" lines. */
function trailerFrame(t) {
  const text = Object.entries(t)
    .filter(([k]) => k.startsWith("grpc-"))
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("");
  const body = Buffer.from(text);
  const head = Buffer.alloc(5);
  head[0] = 0x80;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

function relay(req, res) {
  const headers = {
    ":method": "POST",
    ":path": req.url,
    "content-type": "application/grpc",
    te: "trailers",
  };
  for (const h of ["authorization", "x-api-key", "grpc-timeout", "x-request-id"]) if (req.headers[h]) headers[h] = req.headers[h];
  const up = session().request(headers);
  let sentHead = false;
  const head = (status = 200) => {
    if (sentHead) return;
    sentHead = true;
    res.writeHead(status, { "content-type": "application/grpc-web+proto", "cache-control": "no-store" });
  };
  up.on("response", (h) => {
    head();
    if (h["grpc-status"] !== undefined) {
      // trailers-only response
      res.end(trailerFrame(h));
      up.close();
    }
  });
  up.on("data", (chunk) => {
    head();
    res.write(chunk);
  });
  up.on("trailers", (t) => {
    head();
    res.end(trailerFrame(t));
  });
  up.on("end", () => {
    if (!res.writableEnded) {
      head();
      res.end();
    }
  });
  up.on("error", (e) => {
    head();
    if (!res.writableEnded) res.end(trailerFrame({ "grpc-status": "14", "grpc-message": encodeURIComponent(String(e.message)) }));
  });
  res.on("close", () => {
    if (!res.writableFinished) up.close();
  });
  req.pipe(up);
}

createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://x");
  if (req.method === "POST" && /^\/[a-z0-9_.]+\.[A-Za-z]+Service\/[A-Za-z]+$/.test(url.pathname) && String(req.headers["content-type"]).startsWith("application/grpc-web")) {
    relay(req, res);
    return;
  }
  res.setHeader("content-security-policy", CSP);
  if (url.pathname === "/ui/config.json") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ version: "dev", clerkPublishableKey: process.env.AGENTZ_CLERK_PUBLISHABLE_KEY || null }));
    return;
  }
  const rel = normalize(url.pathname).replace(/^(\.\.[/\\])+/, "");
  let file = join(dist, rel);
  if (!existsSync(file) || statSync(file).isDirectory()) file = join(dist, "index.html");
  res.setHeader("content-type", TYPES[extname(file)] ?? "application/octet-stream");
  res.end(readFileSync(file));
}).listen(Number(portText), host, function () {
  const a = this.address();
  console.log(`dev gateway on http://${a.address}:${a.port} -> gRPC ${grpc}`);
  if (token) console.log(`web UI: http://${a.address}:${a.port}/#token=${token}`);
});
