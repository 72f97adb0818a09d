// @ts-check
// The real stack for the end-to-end tests: the fake LLM (build/bin/agentz-fakellm) and agentzd
// with the api, worker and gateway roles on free ports of 127.0.0.1, its own embedded PostgreSQL
// and Redis in a fresh data dir. The gateway's URL and the local admin key are read from the line
// agentzd prints: "web UI: http://HOST:PORT/#token=KEY".
import { spawn } from "node:child_process";
import { chmodSync, createWriteStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { ROOT, WEB } from "./browser.mjs";

const BIN = process.env.AGENTZ_BIN ?? join(ROOT, "build", "bin");

/**
 * Spawns cmd and resolves with the first stdout line matching re.
 * @param {string} cmd @param {string[]} args @param {NodeJS.ProcessEnv} env @param {RegExp} re
 * @param {string} log @param {number} timeoutMs
 */
function startAndWait(cmd, args, env, re, log, timeoutMs) {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const out = createWriteStream(log);
  child.stderr.pipe(out);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} did not print ${re} within ${timeoutMs} ms; see ${log}`));
    }, timeoutMs);
    const rl = createInterface({ input: child.stdout });
    rl.on("line", (line) => {
      out.write(`${line}\n`);
      const m = re.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code} before it was ready; see ${log}`));
    });
  });
}

/** @param {import("node:child_process").ChildProcess} child @param {number} ms */
function stop(child, ms) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const t = setTimeout(() => child.kill("SIGKILL"), ms);
    child.once("exit", (code) => {
      clearTimeout(t);
      resolve(code);
    });
    child.kill("SIGTERM");
  });
}

/**
 * @param {{ fakeArgs?: string[], env?: Record<string, string> }} [opts]
 */
export async function startStack(opts = {}) {
  // AGENTZ_E2E_URL=http://HOST:PORT/#token=KEY runs the browser tests against a stack started
  // by hand (for debugging a test); the tests that set up through REST need the real gateway.
  const external = process.env.AGENTZ_E2E_URL;
  if (external) {
    const u = new URL(external);
    const tok = new URLSearchParams(u.hash.slice(1)).get("token") ?? "";
    return {
      origin: u.origin,
      token: tok,
      uiUrl: external,
      fakeUrl: "",
      dir: "",
      log: () => "",
      /** @param {string} method @param {string} path @param {unknown} [body] @param {string} [auth] @returns {Promise<{ status: number, json: any }>} json: proto3 JSON */
      async rest(method, path, body, auth = tok) {
        const r = await fetch(`${u.origin}${path}`, { method, headers: { authorization: `Bearer ${auth}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
        const text = await r.text();
        return { status: r.status, json: text ? JSON.parse(text) : null };
      },
      async stop() {
        return 0;
      },
    };
  }
  const dir = mkdtempSync(join(tmpdir(), "agentz-e2e-"));
  // The embedded PostgreSQL runs as the postgres user when we are root: it must reach the dir.
  chmodSync(dir, 0o755);
  const fake = /** @type {{ child: import("node:child_process").ChildProcess, match: RegExpExecArray }} */ (
    await startAndWait(join(BIN, "agentz-fakellm"), opts.fakeArgs ?? ["--text", "The answer is 42.", "--chunk-size", "4", "--chunk-delay-ms", "20"], process.env, /fakellm listening on (\S+)/, join(dir, "fakellm.log"), 10_000)
  );
  const fakeUrl = fake.match[1];
  const drop = ["AGENTZ_DATABASE_URL", "AGENTZ_REDIS_URL", "AGENTZ_LLM_API_KEY", "AGENTZ_LLM_MODEL", "AGENTZ_LLM_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"];
  /** @type {NodeJS.ProcessEnv} */
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.includes(k)));
  Object.assign(env, {
    AGENTZ_LLM_PROVIDER: "openai",
    AGENTZ_LLM_BASE_URL: fakeUrl,
    AGENTZ_LLM_MODEL: "fake-model",
    AGENTZ_RATE_LIMIT: "0",
    AGENTZ_RATE_LIMIT_WORKSPACE: "0",
    AGENTZ_RATE_LIMIT_EXPENSIVE: "0",
    AGENTZ_STREAM_HEARTBEAT: "2s",
    // Where the gateway finds the built app (its default is web/dist of the source tree).
    AGENTZ_GATEWAY_WEB_DIR: join(WEB, "dist"),
    ...(opts.env ?? {}),
  });
  const dataDir = join(dir, "data");
  let server;
  try {
    server = /** @type {{ child: import("node:child_process").ChildProcess, match: RegExpExecArray }} */ (
      await startAndWait(
        join(BIN, "agentzd"),
        ["--roles", "api,worker,gateway", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"],
        env,
        /web UI: (http:\/\/[^/\s#]+)\/?#token=(\S+)/,
        join(dir, "agentzd.log"),
        120_000,
      )
    );
  } catch (e) {
    await stop(fake.child, 5000);
    throw e;
  }
  const origin = server.match[1];
  const token = server.match[2];
  return {
    origin,
    token,
    uiUrl: `${origin}/#token=${token}`,
    fakeUrl,
    dir,
    log: () => readFileSync(join(dir, "agentzd.log"), "utf8"),
    /**
     * REST JSON call of the gateway (for test setup, e.g. a viewer key), with a token.
     * @param {string} method @param {string} path @param {unknown} [body] @param {string} [auth]
     * @returns {Promise<{ status: number, json: any }>} json: the response's proto3 JSON, whatever the method
     */
    async rest(method, path, body, auth = token) {
      const r = await fetch(`${origin}${path}`, {
        method,
        headers: { authorization: `Bearer ${auth}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      return { status: r.status, json: text ? JSON.parse(text) : null };
    },
    async stop() {
      const code = await stop(server.child, 30_000);
      await stop(fake.child, 5000);
      if (!process.env.KEEP_E2E_DIR) rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
