// The CrewAI mapping of `agentz import crewai` / `agentz export crewai` (client/crewai.c, the
// "Coming from CrewAI" section of docs/cli.md), ported so a crew imported in the UI is the same
// agents and workflow as one imported with the CLI: same names, same steps, same inputs, same
// warnings, and the same idempotency keys (a re-import from either returns the first objects).
import { clone, fromJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { AgentSchema, type Agent } from "../gen/agentz/v1/agent_pb";
import { Process, TemplateSchema, WorkflowSchema, type Template, type Workflow } from "../gen/agentz/v1/workflow_pb";
import { crewaiKey, crewaiRequestId } from "./fnv";
import { scanPlaceholders } from "./placeholder";
import { emitYaml, parseYaml, YInt, type YMap, type YValue } from "./yamlValue";

export class CrewaiError extends Error {}

export type ProcessFlag = "sequential" | "parallel" | "hierarchical";

export interface CrewImportOptions {
  /** The workflow name (the CLI's --name, default: the project directory's name). */
  name: string;
  /** The project's name for the workflow description (the CLI: the directory's name). */
  source?: string;
  /** --process; undefined = sequential unless the tasks need parallel. */
  process?: ProcessFlag;
  /** --manager-llm, e.g. "openai/gpt-4o"; implies hierarchical. */
  managerLlm?: string;
  agentsName?: string;
  tasksName?: string;
}

export interface CrewImport {
  /** Agents named by their agents.yaml keys; steps name their agent by key. */
  template: Template;
  /** Every CrewAI setting that was dropped or changed, one line each. */
  notes: string[];
}

const STEP_ID_MAX = 63;
const AGENT_NAME_MAX = 128;

const LLM_PREFIXES: { prefix: string; provider: string; baseUrl: string | null }[] = [
  { prefix: "openai", provider: "openai", baseUrl: null },
  { prefix: "anthropic", provider: "anthropic", baseUrl: null },
  { prefix: "ollama", provider: "openai", baseUrl: "http://localhost:11434/v1" },
  { prefix: "ollama_chat", provider: "openai", baseUrl: "http://localhost:11434/v1" },
  { prefix: "groq", provider: "openai", baseUrl: "https://api.groq.com/openai/v1" },
  { prefix: "deepseek", provider: "openai", baseUrl: "https://api.deepseek.com/v1" },
  { prefix: "mistral", provider: "openai", baseUrl: "https://api.mistral.ai/v1" },
  { prefix: "openrouter", provider: "openai", baseUrl: "https://openrouter.ai/api/v1" },
];

/** CrewAI tool classes with an AGENTZ equivalent, and the AGENTZ tools themselves. */
const TOOL_MAP: Record<string, string> = {
  ScrapeWebsiteTool: "http_fetch",
  http_fetch: "http_fetch",
  current_time: "current_time",
  calculator: "calculator",
};

export { AGENTZ_TOOLS } from "./tools";

// ---- small helpers mirroring the C code ----

/** printf("%.Ng", x). */
export function formatG(x: number, precision: number): string {
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  if (!Number.isFinite(x)) return String(x);
  const exp = Math.floor(Math.log10(Math.abs(x)));
  let e = Number(x.toExponential(precision - 1).split("e")[1]);
  if (Number.isNaN(e)) e = exp;
  if (e < -4 || e >= precision) {
    const [m, ex] = x.toExponential(precision - 1).split("e") as [string, string];
    const mant = m.includes(".") ? m.replace(/\.?0+$/, "") : m;
    const n = Number(ex);
    return `${mant}e${n < 0 ? "-" : "+"}${String(Math.abs(n)).padStart(2, "0")}`;
  }
  const f = x.toFixed(Math.max(0, precision - 1 - e));
  return f.includes(".") ? f.replace(/\.?0+$/, "") : f;
}

/** The text of a scalar (numbers and bools as YAML wrote them); null for null and collections. */
function scalarText(v: YValue): string | null {
  if (typeof v === "string") return v;
  if (v instanceof YInt) return v.value.toString();
  if (typeof v === "number") return formatG(v, 17);
  if (typeof v === "boolean") return v ? "true" : "false";
  return null;
}

const isMap = (v: YValue): v is YMap => v instanceof Map;
const isSpace = (c: string) => c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\v" || c === "\f";

function cleanText(s: string, oneLine: boolean): string {
  let a = 0;
  let b = s.length;
  while (a < b && isSpace(s[a]!)) a++;
  while (b > a && isSpace(s[b - 1]!)) b--;
  const t = s.slice(a, b);
  return oneLine ? t.replace(/[\n\r\t]/g, " ") : t;
}

/** "Research Task!" -> "research_task_": the Step.id alphabet [a-z0-9_-]{1,63}. */
export function crewStepId(key: string): string {
  let out = "";
  // The C code walks bytes: a non-ASCII character is several '_' (one per UTF-8 byte).
  for (const byte of new TextEncoder().encode(key)) {
    if (out.length >= STEP_ID_MAX) break;
    const c = String.fromCharCode(byte);
    if (c >= "A" && c <= "Z") out += c.toLowerCase();
    else if ((c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c === "-") out += c;
    else out += "_";
  }
  return out;
}

/** The first n bytes of s in UTF-8, as "%.Ns" does. */
function bytesPrefix(s: string, n: number): string {
  const b = new TextEncoder().encode(s);
  if (b.length <= n) return s;
  return new TextDecoder().decode(b.slice(0, n)).replace(/\uFFFD$/, "");
}

interface Ctx {
  agentsName: string;
  tasksName: string;
  notes: string[];
  inputs: string[];
}

function addInputs(x: Ctx, text: string): void {
  for (const n of scanPlaceholders(text)) if (!x.inputs.includes(n)) x.inputs.push(n);
}

// ---- agents.yaml ----

function agentTypeError(x: Ctx, agent: string, key: string, want: string): CrewaiError {
  return new CrewaiError(`${x.agentsName}: agent ${agent}: ${key}: expected ${want}`);
}

function parseLlm(x: Ctx, where: string, s: string): JsonObject | null {
  if (!s) return null;
  const slash = s.indexOf("/");
  let provider: string;
  let baseUrl: string | null = null;
  let model = s;
  if (slash >= 0) {
    const pre = s.slice(0, slash);
    const hit = LLM_PREFIXES.find((p) => p.prefix === pre);
    if (!hit) {
      x.notes.push(
        `${where}: llm "${s}": provider "${pre}" is not supported (openai, anthropic, ollama, groq, deepseek, mistral, openrouter); the server's default model is used`,
      );
      return null;
    }
    provider = hit.provider;
    baseUrl = hit.baseUrl;
    model = s.slice(slash + 1);
  } else {
    provider = s.startsWith("claude") ? "anthropic" : "openai";
  }
  const o: JsonObject = { provider, model };
  if (baseUrl) o.base_url = baseUrl;
  return o;
}

function jsonOf(v: YValue): JsonValue {
  if (v instanceof YInt) return Number(v.value);
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, jsonOf(x)]));
  if (Array.isArray(v)) return v.map(jsonOf);
  return v;
}

function aLlm(x: Ctx, agent: string, key: string, v: YValue, out: JsonObject): void {
  const where = `${x.agentsName}: agent ${agent}`;
  let llm: JsonObject | null = null;
  if (typeof v === "string") {
    llm = parseLlm(x, where, v);
  } else if (isMap(v)) {
    const m = v.get("model");
    if (typeof m !== "string") throw agentTypeError(x, agent, "llm.model", "text");
    llm = parseLlm(x, where, m);
    const keys = ["model", "base_url", "temperature", "max_tokens"];
    for (const [k, item] of v) {
      const i = keys.indexOf(k);
      if (i < 0) {
        x.notes.push(`${where}: llm.${k} is not supported; ignored`);
      } else if (i > 0 && llm && item !== null) {
        const isNum = typeof item === "number" || item instanceof YInt;
        if ((i === 1 && typeof item !== "string") || (i === 2 && !isNum) || (i === 3 && !(item instanceof YInt))) {
          throw agentTypeError(x, agent, k, i === 1 ? "a URL" : "a number");
        }
        llm[k] = jsonOf(item);
      }
    }
  } else {
    throw agentTypeError(x, agent, key, "a model name such as openai/gpt-4o");
  }
  if (llm) out.llm = llm;
}

function aTools(x: Ctx, agent: string, key: string, v: YValue, out: JsonObject): void {
  if (!Array.isArray(v)) throw agentTypeError(x, agent, key, "a list of tool names");
  const tools: string[] = [];
  out.tools = tools;
  for (const t of v) {
    if (typeof t !== "string") throw agentTypeError(x, agent, key, "a list of tool names");
    let name = bytesPrefix(t, 127);
    if (name.length > 2 && name.endsWith("()")) name = name.slice(0, -2);
    const mapped = Object.prototype.hasOwnProperty.call(TOOL_MAP, name) ? TOOL_MAP[name] : undefined;
    if (!mapped) {
      x.notes.push(
        `${x.agentsName}: agent ${agent}: tool ${name} has no AGENTZ equivalent (http_fetch, current_time, calculator); dropped`,
      );
      continue;
    }
    if (!tools.includes(mapped)) tools.push(mapped);
  }
}

type AgentFn = (x: Ctx, agent: string, key: string, v: YValue, out: JsonObject, field: string) => void;

const aText: AgentFn = (x, agent, key, v, out, field) => {
  const s = scalarText(v);
  if (s === null) throw agentTypeError(x, agent, key, "text");
  const t = cleanText(s, field === "role");
  out[field] = t;
  addInputs(x, t);
};
const aBool: AgentFn = (x, agent, key, v, out, field) => {
  if (typeof v !== "boolean") throw agentTypeError(x, agent, key, "true or false");
  out[field] = v;
};
const aCount: AgentFn = (x, agent, key, v, out, field) => {
  if (!(v instanceof YInt) || v.value < 0n || v.value > 2147483647n) throw agentTypeError(x, agent, key, "a whole number >= 0");
  out[field] = Number(v.value);
};
const aSeconds: AgentFn = (x, agent, key, v, out, field) => {
  const n = v instanceof YInt ? Number(v.value) : typeof v === "number" ? v : null;
  if (n === null || n < 0) throw agentTypeError(x, agent, key, "a number of seconds");
  out[field] = `${formatG(n, 9)}s`;
};

const AGENT_KEYS: Record<string, { fn: AgentFn | null; field: string }> = {
  role: { fn: aText, field: "role" },
  goal: { fn: aText, field: "goal" },
  backstory: { fn: aText, field: "backstory" },
  llm: { fn: (x, a, k, v, o) => aLlm(x, a, k, v, o), field: "llm" },
  tools: { fn: (x, a, k, v, o) => aTools(x, a, k, v, o), field: "tools" },
  allow_delegation: { fn: aBool, field: "allow_delegation" },
  max_iter: { fn: aCount, field: "max_iter" },
  max_rpm: { fn: aCount, field: "max_rpm" },
  max_execution_time: { fn: aSeconds, field: "max_execution_time" },
  memory: { fn: aBool, field: "memory" },
  verbose: { fn: null, field: "" },
};

function importAgent(x: Ctx, name: string, def: YValue): JsonObject {
  if (!isMap(def)) throw new CrewaiError(`${x.agentsName}: agent ${name}: expected a mapping of settings`);
  if (new TextEncoder().encode(name).length > AGENT_NAME_MAX) {
    throw new CrewaiError(`${x.agentsName}: agent ${bytesPrefix(name, 40)}...: name longer than ${AGENT_NAME_MAX} characters`);
  }
  for (const r of ["role", "goal", "backstory"]) {
    if (!def.has(r) || def.get(r) === null) throw new CrewaiError(`${x.agentsName}: agent ${name}: ${r} is required`);
  }
  const a: JsonObject = { name };
  for (const [key, v] of def) {
    const h = Object.prototype.hasOwnProperty.call(AGENT_KEYS, key) ? AGENT_KEYS[key] : undefined;
    if (!h) {
      x.notes.push(`${x.agentsName}: agent ${name}: ${key} is not supported by AGENTZ; ignored`);
      continue;
    }
    if (!h.fn || v === null) continue;
    h.fn(x, name, key, v, a, h.field);
  }
  return a;
}

// ---- tasks.yaml ----

interface TaskRec {
  key: string;
  id: string;
  def: YValue;
  step: JsonObject;
  async: boolean;
  hasContext: boolean;
  ctx: number[];
}

const UNSUPPORTED_TASK_KEYS: Record<string, string> = {
  output_file: "read the step's output from the run instead",
  output_json: "no Pydantic models; set output_schema on the step",
  output_pydantic: "no Pydantic models; set output_schema on the step",
  human_input: "steps run unattended",
  tools: "tools belong to the agent",
  callback: "use workflow webhooks",
  guardrail: "use output_schema",
};

function taskTypeError(x: Ctx, t: TaskRec, key: string, want: string): CrewaiError {
  return new CrewaiError(`${x.tasksName}: task ${t.key}: ${key}: expected ${want}`);
}

function taskKey(x: Ctx, ts: TaskRec[], i: number, agents: YMap, key: string, v: YValue): boolean {
  const t = ts[i]!;
  switch (key) {
    case "description":
    case "expected_output": {
      const s = scalarText(v);
      if (s === null) throw taskTypeError(x, t, key, "text");
      const c = cleanText(s, false);
      t.step[key] = c;
      addInputs(x, c);
      return true;
    }
    case "agent":
      if (typeof v !== "string") throw taskTypeError(x, t, key, "an agent name from agents.yaml");
      if (!agents.has(v)) throw new CrewaiError(`${x.tasksName}: task ${t.key}: agent "${v}" is not defined in ${x.agentsName}`);
      t.step.agent_id = v;
      return true;
    case "context": {
      const list = typeof v === "string" ? [v] : v;
      if (!Array.isArray(list)) throw taskTypeError(x, t, key, "a list of task names");
      t.hasContext = true;
      for (const name of list) {
        if (typeof name !== "string") throw taskTypeError(x, t, key, "a list of task names");
        const j = ts.findIndex((o) => o.key === name);
        if (j < 0) throw new CrewaiError(`${x.tasksName}: task ${t.key}: context names "${name}", which is not a task of this file`);
        if (j >= i) throw new CrewaiError(`${x.tasksName}: task ${t.key}: context names "${name}", which does not come before it; move it earlier`);
        if (!t.ctx.includes(j)) t.ctx.push(j);
      }
      return true;
    }
    case "async_execution":
      if (typeof v !== "boolean") throw taskTypeError(x, t, key, "true or false");
      t.async = v;
      return true;
    default:
      if (Object.prototype.hasOwnProperty.call(UNSUPPORTED_TASK_KEYS, key)) {
        x.notes.push(`${x.tasksName}: task ${t.key}: ${key} is not supported (${UNSUPPORTED_TASK_KEYS[key]}); ignored`);
        return true;
      }
      return false;
  }
}

const KNOWN_TASK_KEYS = new Set(["description", "expected_output", "agent", "context", "async_execution", ...Object.keys(UNSUPPORTED_TASK_KEYS)]);

const PROCESSES: Record<ProcessFlag, string> = {
  sequential: "PROCESS_SEQUENTIAL",
  parallel: "PROCESS_PARALLEL",
  hierarchical: "PROCESS_HIERARCHICAL",
};

function parallelDeps(ts: TaskRec[]): void {
  let barrier = -1;
  let pendingFrom = 0;
  ts.forEach((t, i) => {
    const deps: number[] = [];
    if (barrier >= 0) deps.push(barrier);
    if (!t.async) for (let j = pendingFrom; j < i; j++) if (ts[j]!.async) deps.push(j);
    for (const c of t.ctx) if (!deps.includes(c)) deps.push(c);
    if (deps.length) t.step.depends_on = dedupeIds(deps.map((d) => ts[d]!.id));
    if (!t.async) {
      barrier = i;
      pendingFrom = i + 1;
    }
  });
}

const dedupeIds = (ids: string[]) => ids.filter((id, k) => ids.indexOf(id) === k);

function importTasks(x: Ctx, ts: TaskRec[], agents: YMap, opts: CrewImportOptions, wf: JsonObject): void {
  let process: string | null = null;
  if (opts.process) {
    process = Object.prototype.hasOwnProperty.call(PROCESSES, opts.process) ? PROCESSES[opts.process] : null;
    if (!process) throw new CrewaiError(`--process: unknown process "${opts.process}" (sequential, parallel or hierarchical)`);
  }
  const hierarchical = process === "PROCESS_HIERARCHICAL";
  ts.forEach((t, i) => {
    if (!isMap(t.def)) throw new CrewaiError(`${x.tasksName}: task ${t.key}: expected a mapping of settings`);
    for (const r of ["description", "expected_output"]) {
      if (!t.def.has(r) || t.def.get(r) === null) throw new CrewaiError(`${x.tasksName}: task ${t.key}: ${r} is required`);
    }
    for (const [key, v] of t.def) {
      if (!KNOWN_TASK_KEYS.has(key)) {
        x.notes.push(`${x.tasksName}: task ${t.key}: ${key} is not supported by AGENTZ; ignored`);
        continue;
      }
      if (v === null) continue;
      taskKey(x, ts, i, agents, key, v);
    }
    if (t.step.agent_id === undefined && !hierarchical) {
      throw new CrewaiError(`${x.tasksName}: task ${t.key}: agent is required (or import with --process hierarchical)`);
    }
    if (t.hasContext && t.ctx.length === 0) {
      x.notes.push(`${x.tasksName}: task ${t.key}: an empty context (no context at all) cannot be expressed; the step gets the default context`);
    }
  });
  let needParallel = false;
  ts.forEach((t, i) => {
    needParallel ||= t.async;
    needParallel ||= t.ctx.length > 1 || (t.ctx.length === 1 && t.ctx[0]! + 1 !== i);
  });
  if (!process) process = needParallel ? "PROCESS_PARALLEL" : "PROCESS_SEQUENTIAL";
  else if (needParallel && process !== "PROCESS_PARALLEL") {
    x.notes.push(
      `${x.tasksName}: async_execution and context naming earlier tasks need --process parallel; with ${opts.process} the steps run one after the other (context is kept as context_from)`,
    );
  }
  wf.process = process;
  for (const t of ts) {
    if (t.ctx.length) t.step.context_from = dedupeIds(t.ctx.map((c) => ts[c]!.id));
    if (t.async && process !== "PROCESS_PARALLEL") {
      x.notes.push(`${x.tasksName}: task ${t.key}: async_execution is ignored with process ${process.slice(8)}`);
    }
  }
  if (process === "PROCESS_PARALLEL") parallelDeps(ts);
}

function managerAgent(x: Ctx, opts: CrewImportOptions, agentsDoc: YMap, wf: JsonObject, agents: JsonObject[]): void {
  if (!opts.managerLlm) throw new CrewaiError("--process hierarchical needs --manager-llm MODEL (the manager agent's model)");
  const name = `${bytesPrefix(opts.name, 120)}-manager`;
  if (agentsDoc.has(name)) throw new CrewaiError(`${x.agentsName}: agent ${name}: the name is needed for the manager agent; rename it`);
  const llm = parseLlm(x, "--manager-llm", opts.managerLlm);
  if (!llm) throw new CrewaiError(`--manager-llm: cannot use "${opts.managerLlm}"`);
  agents.push({
    name,
    role: "Crew Manager",
    goal: "Manage the team to complete the task in the best way possible.",
    backstory:
      "You are a seasoned manager with a knack for getting the best out of your team. You are known for your ability to delegate work to the right people and to ask the right questions to get the best out of your team.",
    llm,
    allow_delegation: true,
  });
  wf.manager_agent_id = name;
}

/**
 * az_crewai_import: maps the texts of agents.yaml and tasks.yaml to a Template whose agents are
 * named by their keys and whose steps (one per task, in file order) name their agent by key.
 * Throws CrewaiError naming the file and key (YAML errors with line:column).
 */
export function importCrew(agentsText: string, tasksText: string, opts: CrewImportOptions): CrewImport {
  const x: Ctx = { agentsName: opts.agentsName ?? "agents.yaml", tasksName: opts.tasksName ?? "tasks.yaml", notes: [], inputs: [] };
  if (!opts.name) throw new CrewaiError("--name: the workflow needs a name");
  if (opts.managerLlm && opts.process && opts.process !== "hierarchical") {
    throw new CrewaiError("--manager-llm needs --process hierarchical");
  }
  const effective: CrewImportOptions = { ...opts, process: opts.process ?? (opts.managerLlm ? "hierarchical" : undefined) };
  const load = (text: string, name: string) => {
    try {
      return parseYaml(text, name);
    } catch (e) {
      throw new CrewaiError((e as Error).message);
    }
  };
  const adoc = load(agentsText, x.agentsName);
  const tdoc = load(tasksText, x.tasksName);
  if (!isMap(adoc) || adoc.size === 0) throw new CrewaiError(`${x.agentsName}: expected a mapping of agent names to agents`);
  if (!isMap(tdoc) || tdoc.size === 0) throw new CrewaiError(`${x.tasksName}: expected a mapping of task names to tasks`);

  const desc = `Imported from the CrewAI project ${bytesPrefix(opts.source ?? opts.name, 400)}`;
  const agents: JsonObject[] = [];
  const steps: JsonObject[] = [];
  const wf: JsonObject = { name: opts.name, description: desc, steps };
  const ts: TaskRec[] = [];
  for (const [key, def] of tdoc) {
    const id = crewStepId(key);
    if (!id) throw new CrewaiError(`${x.tasksName}: task "${key}": the name gives an empty step id`);
    const dup = ts.find((t) => t.id === id);
    if (dup) throw new CrewaiError(`${x.tasksName}: tasks ${dup.key} and ${key} both become step id "${id}"`);
    const step: JsonObject = { id };
    steps.push(step);
    ts.push({ key, id, def, step, async: false, hasContext: false, ctx: [] });
  }
  importTasks(x, ts, adoc, effective, wf);
  for (const [key, def] of adoc) agents.push(importAgent(x, key, def));
  if (wf.process === "PROCESS_HIERARCHICAL") managerAgent(x, effective, adoc, wf, agents);
  wf.inputs = x.inputs.map((name) => ({ name, required: true }));
  const template = fromJson(TemplateSchema, { name: opts.name, description: desc, agents, workflow: wf });
  return { template, notes: x.notes };
}

/** What to create for an import: agents named <workflow>/<key>, and the request ids the CLI uses. */
export interface CrewPlan {
  key: string;
  agents: { key: string; agent: Agent; requestId: string }[];
  workflowRequestId: string;
}

/**
 * The CLI's create_all plan: agent names get the workflow name as a prefix (names are unique per
 * workspace) and each create carries the request id derived from both files and the options.
 */
export function planCrewImport(agentsText: string, tasksText: string, opts: CrewImportOptions, imported: CrewImport): CrewPlan {
  const process = opts.process ?? (opts.managerLlm ? "hierarchical" : null);
  const key = crewaiKey(agentsText, tasksText, { name: opts.name, process, managerLlm: opts.managerLlm ?? null, seed: null });
  const wf = imported.template.workflow!;
  return {
    key,
    agents: imported.template.agents.map((a) => {
      const agent = clone(AgentSchema, a);
      agent.name = `${bytesPrefix(wf.name, 60)}/${bytesPrefix(a.name, 60)}`;
      return { key: a.name, agent, requestId: crewaiRequestId(key, "agent", a.name) };
    }),
    workflowRequestId: crewaiRequestId(key, "workflow", wf.name),
  };
}

/** The workflow to create once the agents exist: agent keys replaced by their new ids. */
export function bindWorkflowAgents(wf: Workflow, idsByKey: ReadonlyMap<string, string>): Workflow {
  const out = clone(WorkflowSchema, wf);
  for (const s of out.steps) if (s.agentId) s.agentId = idsByKey.get(s.agentId) ?? s.agentId;
  if (out.managerAgentId) out.managerAgentId = idsByKey.get(out.managerAgentId) ?? out.managerAgentId;
  return out;
}

// ---- export ----

export interface CrewExport {
  agentsYaml: string;
  tasksYaml: string;
  notes: string[];
}

function llmString(a: Agent, notes: string[]): string | null {
  const l = a.llm;
  if (!l || !l.model) return null;
  let prefix = LLM_PREFIXES.find((p) => p.provider === l.provider && (p.baseUrl ?? "") === l.baseUrl)?.prefix;
  if (!prefix) {
    prefix = l.provider === "anthropic" ? "anthropic" : "openai";
    notes.push(`agent ${a.name}: llm.base_url ${l.baseUrl} cannot be written in agents.yaml; dropped`);
  }
  if (l.temperature !== undefined || l.maxTokens || l.timeout || l.apiKeySecret) {
    notes.push(`agent ${a.name}: llm temperature, max_tokens, timeout and api_key_secret are not part of agents.yaml; set them in crew.py`);
  }
  return `${prefix}/${l.model}`;
}

function exportAgent(a: Agent, notes: string[]): Record<string, unknown> {
  const o: Record<string, unknown> = { role: a.role, goal: a.goal, backstory: a.backstory };
  if (a.llm && a.llm.model) o.llm = llmString(a, notes);
  if (a.tools.length) o.tools = [...a.tools];
  if (a.allowDelegation) o.allow_delegation = true;
  if (a.maxIter) o.max_iter = a.maxIter;
  if (a.maxRpm) o.max_rpm = a.maxRpm;
  if (a.maxExecutionTime) {
    // CrewAI takes whole seconds; round up so the limit never gets tighter.
    o.max_execution_time = Number(a.maxExecutionTime.seconds) + (a.maxExecutionTime.nanos > 0 ? 1 : 0);
  }
  if (a.memory) o.memory = true;
  if (a.disabled) notes.push(`agent ${a.name}: disabled has no CrewAI equivalent; dropped`);
  if (Object.keys(a.labels).length) notes.push(`agent ${a.name}: labels have no CrewAI equivalent; dropped`);
  return o;
}

/**
 * az_crewai_export: a workflow and the agents its steps use (matched by id, or by name when the
 * agent has no id, as in a template) as agents.yaml and tasks.yaml texts.
 */
export function exportCrew(wf: Workflow, agents: readonly Agent[]): CrewExport {
  const notes: string[] = [];
  const adoc = new Map<string, Record<string, unknown>>();
  const tdoc = new Map<string, Record<string, unknown>>();
  if (wf.process === Process.HIERARCHICAL) {
    notes.push(`workflow ${wf.name}: hierarchical process: set process=Process.hierarchical and manager_llm in crew.py (the manager agent is not written)`);
  }
  if (wf.process === Process.PARALLEL) {
    notes.push(`workflow ${wf.name}: parallel process: CrewAI runs the tasks in file order; mark tasks that may run concurrently with async_execution: true`);
  }
  if (wf.webhookUrls.length || Object.keys(wf.labels).length || wf.failurePolicy) {
    notes.push(`workflow ${wf.name}: webhooks, labels and failure_policy have no CrewAI equivalent; dropped`);
  }
  const agentFor = (ref: string) => agents.find((a) => (a.id ? a.id === ref : a.name === ref));
  const agentKey = (a: Agent) => a.name || `agent_${agents.indexOf(a) + 1}`;
  wf.steps.forEach((s, i) => {
    const t: Record<string, unknown> = { description: s.description, expected_output: s.expectedOutput };
    tdoc.set(s.id, t);
    if (s.agentId) {
      const a = agentFor(s.agentId);
      if (!a) throw new CrewaiError(`step ${s.id}: agent ${s.agentId} was not given`);
      const key = agentKey(a);
      if (!adoc.has(key)) adoc.set(key, exportAgent(a, notes));
      t.agent = key;
    }
    const prev = i > 0 ? wf.steps[i - 1]!.id : null;
    let ctx = s.contextFrom.length ? s.contextFrom : s.dependsOn;
    let n = s.contextFrom.length;
    if (!n && wf.process === Process.PARALLEL && !(s.dependsOn.length === 1 && prev !== null && s.dependsOn[0] === prev)) {
      n = s.dependsOn.length;
      ctx = s.dependsOn;
    }
    if (n) t.context = ctx.slice(0, n);
    if (s.retryPolicy || s.timeout || s.outputSchema) {
      notes.push(`step ${s.id}: retry_policy, timeout and output_schema have no tasks.yaml equivalent; dropped`);
    }
  });
  return { agentsYaml: emitYaml(adoc), tasksYaml: emitYaml(tdoc), notes };
}

/** The YAML values of a parsed document, for tests and previews. */
export { parseYaml };
