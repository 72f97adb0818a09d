import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Process, WorkflowSchema, type Workflow } from "../gen/agentz/v1/workflow_pb";
import { addEdge, addNode, freshStepId, graphToSteps, removeNode, renameNode, topologicalOrder, validateGraph, workflowToGraph, type WorkflowGraph } from "./graph";

const step = (id: string, extra: Record<string, unknown> = {}) => ({ id, agentId: "A", description: `do ${id}`, expectedOutput: "x", ...extra });

function roundTrip(wf: Workflow) {
  return graphToSteps(workflowToGraph(wf), wf.process);
}

describe("workflow <-> canvas", () => {
  it("a parallel DAG round-trips: depends_on become edges and back", () => {
    const wf = create(WorkflowSchema, {
      process: Process.PARALLEL,
      steps: [step("a"), step("b", { dependsOn: ["a"] }), step("c", { dependsOn: ["a"] }), step("d", { dependsOn: ["b", "c"], contextFrom: ["b"] })],
    });
    const g = workflowToGraph(wf);
    expect(g.edges).toHaveLength(4);
    expect(g.edges).toContainEqual({ source: "b", target: "d" });
    const steps = roundTrip(wf);
    expect(steps.map((s) => s.id)).toEqual(["a", "b", "c", "d"]);
    expect(steps.map((s) => s.dependsOn)).toEqual([[], ["a"], ["a"], ["b", "c"]]);
    expect(steps[3]!.contextFrom).toEqual(["b"]);
  });

  it("lays nodes out left to right along the dependencies", () => {
    const g = workflowToGraph(create(WorkflowSchema, { process: Process.PARALLEL, steps: [step("a"), step("b", { dependsOn: ["a"] })] }));
    const [a, b] = g.nodes;
    expect(b!.position.x).toBeGreaterThan(a!.position.x);
  });

  it("a sequential chain has implied edges and no depends_on or context_from", () => {
    const wf = create(WorkflowSchema, { process: Process.SEQUENTIAL, steps: [step("a"), step("b"), step("c")] });
    const g = workflowToGraph(wf);
    expect(g.edges).toEqual([
      { source: "a", target: "b" },
      { source: "b", target: "c" },
    ]);
    const steps = roundTrip(wf);
    expect(steps.map((s) => [s.id, s.dependsOn.length, s.contextFrom.length])).toEqual([
      ["a", 0, 0],
      ["b", 0, 0],
      ["c", 0, 0],
    ]);
  });

  it("sequential context_from other than the previous step is kept as edges", () => {
    const wf = create(WorkflowSchema, { process: Process.SEQUENTIAL, steps: [step("a"), step("b"), step("c", { contextFrom: ["a", "b"] })] });
    const steps = roundTrip(wf);
    expect(steps[2]!.contextFrom).toEqual(["a", "b"]);
    expect(steps[1]!.contextFrom).toEqual([]);
  });

  it("keeps fields the canvas does not edit (output_schema)", () => {
    const wf = create(WorkflowSchema, {
      process: Process.SEQUENTIAL,
      steps: [step("a", { outputSchema: { type: "object" } })],
    });
    expect(roundTrip(wf)[0]!.outputSchema).toEqual({ type: "object" });
  });

  it("orders sequential steps topologically, ties by the order they were added", () => {
    let g: WorkflowGraph = { nodes: [], edges: [] };
    for (const id of ["write", "research", "review"]) g = addNode(g, id, { x: 0, y: 0 }, { agentId: "A", description: id });
    g = addEdge(g, { source: "research", target: "write" });
    expect(topologicalOrder(g)).toEqual(["research", "write", "review"]);
    const steps = graphToSteps(g, Process.SEQUENTIAL);
    expect(steps.map((s) => s.id)).toEqual(["research", "write", "review"]);
    // write's only input is the previous step: the default context, so nothing is written
    expect(steps[1]!.contextFrom).toEqual([]);
  });
});

describe("validation", () => {
  it("finds cycles, missing agents and descriptions, bad ids and a missing manager", () => {
    let g: WorkflowGraph = { nodes: [], edges: [] };
    g = addNode(g, "a", { x: 0, y: 0 }, { agentId: "A", description: "d" });
    g = addNode(g, "B!", { x: 0, y: 0 }, { description: "" });
    g = addEdge(g, { source: "a", target: "B!" });
    g = addEdge(g, { source: "B!", target: "a" });
    const issues = validateGraph(g, Process.PARALLEL, "");
    const msgs = issues.map((i) => i.message);
    expect(msgs).toContain('step id "B!" must match [a-z0-9_-]{1,64}');
    expect(msgs).toContain("description is required");
    expect(msgs).toContain("agent is required (optional only for hierarchical)");
    expect(msgs.some((m) => m.startsWith("dependency cycle a -> B! -> a"))).toBe(true);
    expect(() => graphToSteps(g, Process.PARALLEL)).toThrow(/dependency cycle/);
    const h = validateGraph(removeNode(g, "B!"), Process.HIERARCHICAL, "");
    expect(h.map((i) => i.field)).toEqual(["manager"]);
  });

  it("parallel context_from must name an upstream step", () => {
    let g: WorkflowGraph = { nodes: [], edges: [] };
    g = addNode(g, "a", { x: 0, y: 0 }, { agentId: "A", description: "d" });
    g = addNode(g, "b", { x: 0, y: 0 }, { agentId: "A", description: "d", contextFrom: ["a"] });
    expect(validateGraph(g, Process.PARALLEL, "").map((i) => i.message)).toEqual(['context from "a" needs "a" upstream of this step']);
    expect(validateGraph(addEdge(g, { source: "a", target: "b" }), Process.PARALLEL, "")).toEqual([]);
  });

  it("ignores self loops and duplicate edges, renames and removes everywhere", () => {
    let g: WorkflowGraph = { nodes: [], edges: [] };
    g = addNode(g, "a", { x: 0, y: 0 }, {});
    g = addNode(g, "b", { x: 0, y: 0 }, { contextFrom: ["a"] });
    g = addEdge(g, { source: "a", target: "b" });
    expect(addEdge(g, { source: "a", target: "b" })).toBe(g);
    expect(addEdge(g, { source: "a", target: "a" })).toBe(g);
    const r = renameNode(g, "a", "first");
    expect(r.edges).toEqual([{ source: "first", target: "b" }]);
    expect(r.nodes[1]!.step.contextFrom).toEqual(["first"]);
    const d = removeNode(r, "first");
    expect(d.edges).toEqual([]);
    expect(d.nodes[0]!.step.contextFrom).toEqual([]);
    expect(freshStepId(g, "a")).toBe("a_2");
    expect(freshStepId(g, "Senior Researcher!")).toBe("senior_researcher");
  });
});
