// @ts-check
// Test setup through the gateway's REST JSON mapping (the same server the UI talks to): agents,
// workflows and runs the reconnect, viewer and performance tests start from.

/**
 * @param {Awaited<ReturnType<typeof import("./stack.mjs").startStack>>} stack
 * @param {{ name: string, steps: number, llm?: Record<string, unknown> }} o
 */
export async function makeWorkflow(stack, o) {
  // unique per call, so a stack that has seen the suite before works too
  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
  const a = await stack.rest("POST", "/v1/agents", { name: `${o.name}-agent-${tag}`, role: "Writer", goal: "Write", backstory: "Writes things.", ...(o.llm ? { llm: o.llm } : {}) });
  if (a.status !== 200) throw new Error(`CreateAgent: ${a.status} ${JSON.stringify(a.json)}`);
  const steps = Array.from({ length: o.steps }, (_, i) => ({ id: `s${i + 1}`, agentId: a.json.id, description: `Part ${i + 1}`, expectedOutput: "Text" }));
  const w = await stack.rest("POST", "/v1/workflows", { name: `${o.name}-${tag}`, process: "PROCESS_SEQUENTIAL", steps });
  if (w.status !== 200) throw new Error(`CreateWorkflow: ${w.status} ${JSON.stringify(w.json)}`);
  return { agentId: /** @type {string} */ (a.json.id), agentName: /** @type {string} */ (a.json.name), workflowId: /** @type {string} */ (w.json.id) };
}

/**
 * @param {Awaited<ReturnType<typeof import("./stack.mjs").startStack>>} stack
 * @param {string} workflowId
 */
export async function startRun(stack, workflowId) {
  const r = await stack.rest("POST", `/v1/workflows/${workflowId}/runs`, { inputs: {} });
  if (r.status !== 200) throw new Error(`StartRun: ${r.status} ${JSON.stringify(r.json)}`);
  return /** @type {string} */ (r.json.id);
}

/** The event-count line of the run view: lines held and events applied. @param {import("playwright-core").Page} page */
export async function runCounts(page) {
  const el = page.getByTestId("event-count");
  return {
    lines: Number(await el.getAttribute("data-count")),
    applied: Number(await el.getAttribute("data-applied")),
  };
}
