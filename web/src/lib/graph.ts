// The workflow builder's canvas model and its conversion to and from agentz.v1.Workflow steps.
//
// Nodes are steps (node id = step id); an edge source -> target means "target needs source".
// - PROCESS_PARALLEL: edges are Step.depends_on; Step.context_from is edited per step (a subset
//   of its upstream steps; empty = the outputs of depends_on).
// - PROCESS_SEQUENTIAL / PROCESS_HIERARCHICAL: steps run one at a time in a topological order of
//   the edges (ties: the order steps were added); a step's incoming edges are its context_from,
//   except when they are just the previous step (the default context), so nothing is lost.
import dagre from "@dagrejs/dagre";
import { clone, create } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { RetryPolicy } from "../gen/agentz/v1/task_pb";
import { Process, StepSchema, type Step, type Workflow } from "../gen/agentz/v1/workflow_pb";

export interface StepData {
  agentId: string;
  description: string;
  expectedOutput: string;
  /** PROCESS_PARALLEL only (the other processes derive it from the edges). */
  contextFrom: string[];
  retryPolicy?: RetryPolicy;
  timeout?: Duration;
  /** Fields the canvas does not edit (output_schema), carried through unchanged. */
  rest?: Step;
}

export interface GraphNode {
  id: string;
  position: { x: number; y: number };
  /** Tie-break of the topological order: the order steps were loaded or added. */
  rank: number;
  step: StepData;
}

export interface GraphEdge {
  source: string;
  target: string;
}

export interface WorkflowGraph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export interface GraphIssue {
  /** The step concerned, or null for the whole graph. */
  stepId: string | null;
  field: "id" | "agentId" | "description" | "edges" | "graph" | "manager";
  message: string;
}

export const STEP_ID_RE = /^[a-z0-9_-]{1,64}$/;
export const NODE_WIDTH = 240;
export const NODE_HEIGHT = 96;

const edgeKey = (e: GraphEdge) => `${e.source}\u0000${e.target}`;

/** Lays the nodes out left to right with dagre. */
export function layoutGraph(g: WorkflowGraph): WorkflowGraph {
  const d = new dagre.graphlib.Graph();
  d.setGraph({ rankdir: "LR", nodesep: 40, ranksep: 80, marginx: 20, marginy: 20 });
  d.setDefaultEdgeLabel(() => ({}));
  for (const n of [...g.nodes].sort((a, b) => a.rank - b.rank)) d.setNode(n.id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const e of g.edges) d.setEdge(e.source, e.target);
  dagre.layout(d);
  return {
    ...g,
    nodes: g.nodes.map((n) => {
      const p = d.node(n.id) as { x: number; y: number } | undefined;
      return p ? { ...n, position: { x: Math.round(p.x - NODE_WIDTH / 2), y: Math.round(p.y - NODE_HEIGHT / 2) } } : n;
    }),
  };
}

function stepData(s: Step, process: Process): StepData {
  return {
    agentId: s.agentId,
    description: s.description,
    expectedOutput: s.expectedOutput,
    contextFrom: process === Process.PARALLEL ? [...s.contextFrom] : [],
    retryPolicy: s.retryPolicy,
    timeout: s.timeout,
    rest: s,
  };
}

/** The canvas of a workflow version (laid out). */
export function workflowToGraph(wf: Pick<Workflow, "steps" | "process">): WorkflowGraph {
  const process = wf.process === Process.UNSPECIFIED ? Process.SEQUENTIAL : wf.process;
  const nodes: GraphNode[] = wf.steps.map((s, i) => ({ id: s.id, position: { x: 0, y: 0 }, rank: i, step: stepData(s, process) }));
  const edges: GraphEdge[] = [];
  const add = (source: string, target: string) => {
    if (!edges.some((e) => e.source === source && e.target === target)) edges.push({ source, target });
  };
  wf.steps.forEach((s, i) => {
    if (process === Process.PARALLEL) for (const d of s.dependsOn) add(d, s.id);
    else if (s.contextFrom.length) for (const c of s.contextFrom) add(c, s.id);
    else if (i > 0) add(wf.steps[i - 1]!.id, s.id);
  });
  return layoutGraph({ nodes, edges });
}

/** Step ids in execution order: Kahn's algorithm, ready steps by rank; null when there is a cycle. */
export function topologicalOrder(g: WorkflowGraph): string[] | null {
  const indeg = new Map(g.nodes.map((n) => [n.id, 0]));
  const out = new Map<string, string[]>(g.nodes.map((n) => [n.id, []]));
  for (const e of g.edges) {
    if (!indeg.has(e.source) || !indeg.has(e.target)) continue;
    indeg.set(e.target, indeg.get(e.target)! + 1);
    out.get(e.source)!.push(e.target);
  }
  const rank = new Map(g.nodes.map((n) => [n.id, n.rank]));
  const ready = g.nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
  const order: string[] = [];
  while (ready.length) {
    ready.sort((a, b) => rank.get(a)! - rank.get(b)! || (a < b ? -1 : 1));
    const id = ready.shift()!;
    order.push(id);
    for (const t of out.get(id)!) {
      indeg.set(t, indeg.get(t)! - 1);
      if (indeg.get(t) === 0) ready.push(t);
    }
  }
  return order.length === g.nodes.length ? order : null;
}

/** A cycle of the graph as step ids (a -> b -> a), or null. */
export function findCycle(g: WorkflowGraph): string[] | null {
  const out = new Map<string, string[]>(g.nodes.map((n) => [n.id, []]));
  for (const e of g.edges) out.get(e.source)?.push(e.target);
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (id: string): string[] | null => {
    state.set(id, 1);
    stack.push(id);
    for (const t of out.get(id) ?? []) {
      if (state.get(t) === 1) return [...stack.slice(stack.indexOf(t)), t];
      if (!state.has(t)) {
        const c = visit(t);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(id, 2);
    return null;
  };
  for (const n of [...g.nodes].sort((a, b) => a.rank - b.rank)) {
    if (!state.has(n.id)) {
      const c = visit(n.id);
      if (c) return c;
    }
  }
  return null;
}

/** Steps upstream of id (reachable backwards through the edges). */
export function upstreamOf(g: WorkflowGraph, id: string): Set<string> {
  const seen = new Set<string>();
  const todo = [id];
  while (todo.length) {
    const cur = todo.pop()!;
    for (const e of g.edges) if (e.target === cur && !seen.has(e.source)) (seen.add(e.source), todo.push(e.source));
  }
  seen.delete(id);
  return seen;
}

/** What the server would refuse, found before saving (the server's own messages still win). */
export function validateGraph(g: WorkflowGraph, process: Process, managerAgentId: string): GraphIssue[] {
  const issues: GraphIssue[] = [];
  if (g.nodes.length === 0) issues.push({ stepId: null, field: "graph", message: "add at least one step" });
  if (g.nodes.length > 100) issues.push({ stepId: null, field: "graph", message: "at most 100 steps" });
  const ids = new Set<string>();
  for (const n of g.nodes) {
    if (!STEP_ID_RE.test(n.id)) issues.push({ stepId: n.id, field: "id", message: `step id "${n.id}" must match [a-z0-9_-]{1,64}` });
    if (ids.has(n.id)) issues.push({ stepId: n.id, field: "id", message: `step id "${n.id}" is used twice` });
    ids.add(n.id);
    if (!n.step.description.trim()) issues.push({ stepId: n.id, field: "description", message: "description is required" });
    if (!n.step.agentId && process !== Process.HIERARCHICAL) {
      issues.push({ stepId: n.id, field: "agentId", message: "agent is required (optional only for hierarchical)" });
    }
  }
  for (const e of g.edges) {
    if (e.source === e.target) issues.push({ stepId: e.target, field: "edges", message: "a step cannot depend on itself" });
  }
  const cycle = findCycle(g);
  if (cycle) issues.push({ stepId: cycle[0]!, field: "edges", message: `dependency cycle ${cycle.join(" -> ")}` });
  if (process === Process.HIERARCHICAL && !managerAgentId) {
    issues.push({ stepId: null, field: "manager", message: "hierarchical workflows need a manager agent" });
  }
  if (process === Process.PARALLEL) {
    for (const n of g.nodes) {
      const up = upstreamOf(g, n.id);
      for (const c of n.step.contextFrom) {
        if (!up.has(c)) issues.push({ stepId: n.id, field: "edges", message: `context from "${c}" needs "${c}" upstream of this step` });
      }
    }
  }
  return issues;
}

/**
 * The steps of the graph, in execution order. Throws when the graph has a cycle (validateGraph
 * reports it first).
 */
export function graphToSteps(g: WorkflowGraph, process: Process): Step[] {
  const order = topologicalOrder(g);
  if (!order) throw new Error(`dependency cycle ${(findCycle(g) ?? []).join(" -> ")}`);
  const pos = new Map(order.map((id, i) => [id, i]));
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const incoming = (id: string) =>
    [...new Set(g.edges.filter((e) => e.target === id && e.source !== id).map((e) => e.source))].sort((a, b) => pos.get(a)! - pos.get(b)!);
  return order.map((id, i) => {
    const n = byId.get(id)!;
    const base = n.step.rest ? clone(StepSchema, n.step.rest) : create(StepSchema, {});
    base.id = id;
    base.agentId = n.step.agentId;
    base.description = n.step.description;
    base.expectedOutput = n.step.expectedOutput;
    base.retryPolicy = n.step.retryPolicy;
    base.timeout = n.step.timeout;
    const inc = incoming(id);
    if (process === Process.PARALLEL) {
      base.dependsOn = inc;
      base.contextFrom = n.step.contextFrom.filter((c) => byId.has(c));
    } else {
      base.dependsOn = [];
      const prev = i > 0 ? order[i - 1]! : null;
      base.contextFrom = inc.length === 0 || (inc.length === 1 && inc[0] === prev) ? [] : inc;
    }
    return base;
  });
}

/** Adds an edge unless it exists or is a self-loop; returns the same graph when nothing changed. */
export function addEdge(g: WorkflowGraph, e: GraphEdge): WorkflowGraph {
  if (e.source === e.target || g.edges.some((x) => edgeKey(x) === edgeKey(e))) return g;
  return { ...g, edges: [...g.edges, e] };
}

export function removeEdge(g: WorkflowGraph, e: GraphEdge): WorkflowGraph {
  return { ...g, edges: g.edges.filter((x) => edgeKey(x) !== edgeKey(e)) };
}

/** A step id not used yet, from a base ("research" -> "research", "research_2", …). */
export function freshStepId(g: WorkflowGraph, base: string): string {
  const clean = base.toLowerCase().replace(/[^a-z0-9_-]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 56) || "step";
  const used = new Set(g.nodes.map((n) => n.id));
  if (!used.has(clean)) return clean;
  for (let i = 2; ; i++) if (!used.has(`${clean}_${i}`)) return `${clean}_${i}`;
}

export function addNode(g: WorkflowGraph, id: string, position: { x: number; y: number }, step: Partial<StepData>): WorkflowGraph {
  const rank = g.nodes.reduce((m, n) => Math.max(m, n.rank + 1), 0);
  const node: GraphNode = {
    id,
    position,
    rank,
    step: { agentId: "", description: "", expectedOutput: "", contextFrom: [], ...step },
  };
  return { ...g, nodes: [...g.nodes, node] };
}

export function removeNode(g: WorkflowGraph, id: string): WorkflowGraph {
  return {
    nodes: g.nodes
      .filter((n) => n.id !== id)
      .map((n) => (n.step.contextFrom.includes(id) ? { ...n, step: { ...n.step, contextFrom: n.step.contextFrom.filter((c) => c !== id) } } : n)),
    edges: g.edges.filter((e) => e.source !== id && e.target !== id),
  };
}

/** Renames a step everywhere (node, edges, context_from). */
export function renameNode(g: WorkflowGraph, from: string, to: string): WorkflowGraph {
  if (from === to) return g;
  const r = (id: string) => (id === from ? to : id);
  return {
    nodes: g.nodes.map((n) => ({ ...n, id: r(n.id), step: { ...n.step, contextFrom: n.step.contextFrom.map(r) } })),
    edges: g.edges.map((e) => ({ source: r(e.source), target: r(e.target) })),
  };
}

export function updateStep(g: WorkflowGraph, id: string, patch: Partial<StepData>): WorkflowGraph {
  return { ...g, nodes: g.nodes.map((n) => (n.id === id ? { ...n, step: { ...n.step, ...patch } } : n)) };
}
