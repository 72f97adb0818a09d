// The workflow builder: agents and tasks dragged (or added with the keyboard) onto a canvas as
// steps, dependencies drawn between them, the process chosen (sequential, parallel, hierarchical
// with a manager), inputs declared, and the result saved as a new immutable version.
import { create } from "@bufbuild/protobuf";
import { Background, Controls, ReactFlow, ReactFlowProvider, useReactFlow, type Connection, type Edge, type NodeChange } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useMemo, useState, type DragEvent } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { api, requestId } from "../api/client";
import { codeName } from "../api/errors";
import { parseFieldError } from "../api/fieldError";
import { useLoad } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import type { Agent } from "../gen/agentz/v1/agent_pb";
import type { Task } from "../gen/agentz/v1/task_pb";
import { FailurePolicy, Process, WorkflowSchema, type Workflow, type WorkflowInput } from "../gen/agentz/v1/workflow_pb";
import { addEdge, addNode, freshStepId, graphToSteps, layoutGraph, removeEdge, removeNode, renameNode, topologicalOrder, updateStep, upstreamOf, validateGraph, workflowToGraph, type GraphIssue, type WorkflowGraph } from "../lib/graph";
import { durationText, parseDuration } from "../lib/format";
import { placeholderNames } from "../lib/placeholder";
import { ConnectError } from "@connectrpc/connect";
import { nodeTypes, type StepFlowNode } from "../components/StepNode";
import { StartRunForm } from "../components/StartRun";
import { Dialog, ErrorNote, Field, Loading, PageHead } from "../components/ui";

interface Meta {
  name: string;
  description: string;
  process: Process;
  managerAgentId: string;
  failurePolicy: FailurePolicy;
  inputs: { name: string; description: string; required: boolean; defaultValue: string }[];
}

const metaOf = (w: Workflow | undefined): Meta => ({
  name: w?.name ?? "",
  description: w?.description ?? "",
  process: w && w.process !== Process.UNSPECIFIED ? w.process : Process.SEQUENTIAL,
  managerAgentId: w?.managerAgentId ?? "",
  failurePolicy: w?.failurePolicy ?? FailurePolicy.FAIL_FAST,
  inputs: (w?.inputs ?? []).map((i: WorkflowInput) => ({ name: i.name, description: i.description, required: i.required, defaultValue: i.defaultValue })),
});

export default function BuilderPage() {
  const { id } = useParams();
  const [params] = useSearchParams();
  const version = Number(params.get("version") ?? 0);
  const wf = useLoad(async () => (id ? api.workflows.getWorkflow({ id, version }) : undefined), [id, version]);
  const agents = useLoad(async () => (await api.agents.listAgents({ pageSize: 1000 })).agents, []);
  const tasks = useLoad(async () => (await api.tasks.listTasks({ pageSize: 50 })).tasks.filter((t) => !t.runId), []);
  // The version just saved (UpdateWorkflow returns it), shown without reading it again.
  const [saved, setSaved] = useState<Workflow | null>(null);
  const current = saved && saved.id === id && !version ? saved : wf.data;
  if ((id && wf.loading && !current) || (agents.loading && !agents.data)) return <Loading what="the workflow" />;
  if (id && !current) return <ErrorNote error={wf.error} />;
  return (
    <ReactFlowProvider>
      <Builder key={`${current?.id ?? "new"}-${current?.version ?? 0}`} workflow={current} agents={agents.data ?? []} tasks={tasks.data ?? []} agentsError={agents.error} onSaved={setSaved} />
    </ReactFlowProvider>
  );
}

type Selection = { kind: "workflow" } | { kind: "step"; id: string };

function Builder({ workflow, agents, tasks, agentsError, onSaved }: { workflow: Workflow | undefined; agents: Agent[]; tasks: Task[]; agentsError: unknown; onSaved: (w: Workflow) => void }) {
  const auth = useAuth();
  const canWrite = auth.can("write");
  const nav = useNavigate();
  const flow = useReactFlow();
  const [graph, setGraph] = useState<WorkflowGraph>(() => (workflow ? workflowToGraph(workflow) : { nodes: [], edges: [] }));
  const [meta, setMeta] = useState<Meta>(() => metaOf(workflow));
  const [sel, setSel] = useState<Selection>({ kind: "workflow" });
  const [issues, setIssues] = useState<GraphIssue[]>([]);
  const [serverError, setServerError] = useState<{ text: string; detail: string; stepId: string | null; path: string | null } | null>(null);
  const [saving, setSaving] = useState(false);
  const [saved, setSaved] = useState<string | null>(null);
  const [running, setRunning] = useState(false);
  const [templating, setTemplating] = useState(false);
  const [rid] = useState(requestId);
  const agentName = useMemo(() => new Map(agents.map((a) => [a.id, a.name || a.role])), [agents]);
  const isLatest = !workflow || !new URLSearchParams(window.location.search).get("version");

  const order = useMemo(() => topologicalOrder(graph), [graph]);
  const issueByStep = useMemo(() => {
    const m = new Map<string, string>();
    for (const i of issues) if (i.stepId && !m.has(i.stepId)) m.set(i.stepId, i.message);
    if (serverError?.stepId) m.set(serverError.stepId, serverError.detail);
    return m;
  }, [issues, serverError]);

  const nodes: StepFlowNode[] = graph.nodes.map((n) => ({
    id: n.id,
    type: "step",
    position: n.position,
    selected: sel.kind === "step" && sel.id === n.id,
    data: {
      stepId: n.id,
      agent: n.step.agentId ? (agentName.get(n.step.agentId) ?? n.step.agentId) : meta.process === Process.HIERARCHICAL ? "manager delegates" : "",
      description: n.step.description,
      order: meta.process !== Process.PARALLEL && order ? order.indexOf(n.id) + 1 : undefined,
      issue: issueByStep.get(n.id),
    },
  }));
  const edges: Edge[] = graph.edges.map((e) => ({ id: `${e.source}->${e.target}`, source: e.source, target: e.target, animated: false, ariaLabel: `${e.target} needs ${e.source}` }));

  const change = (g: WorkflowGraph) => {
    setGraph(g);
    setSaved(null);
    setServerError(null);
  };

  const onNodesChange = (changes: NodeChange<StepFlowNode>[]) => {
    let g = graph;
    for (const c of changes) {
      if (c.type === "position" && c.position) g = { ...g, nodes: g.nodes.map((n) => (n.id === c.id ? { ...n, position: c.position! } : n)) };
      if (c.type === "select" && c.selected) setSel({ kind: "step", id: c.id });
      if (c.type === "remove" && canWrite) g = removeNode(g, c.id);
    }
    if (g !== graph) setGraph(g);
  };

  const addStepFrom = (what: { kind: "agent"; agent: Agent } | { kind: "task"; task: Task } | { kind: "empty" }, position?: { x: number; y: number }) => {
    const pos = position ?? { x: 40 + (graph.nodes.length % 4) * 280, y: 40 + Math.floor(graph.nodes.length / 4) * 140 };
    let id: string;
    let g: WorkflowGraph;
    if (what.kind === "agent") {
      id = freshStepId(graph, what.agent.name.split("/").pop() || what.agent.role || "step");
      g = addNode(graph, id, pos, { agentId: what.agent.id, description: "", expectedOutput: "" });
    } else if (what.kind === "task") {
      const t = what.task;
      id = freshStepId(graph, t.description.split(/\s+/).slice(0, 3).join("_") || "task");
      g = addNode(graph, id, pos, { agentId: t.agentId, description: t.description, expectedOutput: t.expectedOutput, retryPolicy: t.retryPolicy, timeout: t.timeout });
    } else {
      id = freshStepId(graph, "step");
      g = addNode(graph, id, pos, {});
    }
    change(g);
    setSel({ kind: "step", id });
  };

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    if (!canWrite) return;
    const raw = e.dataTransfer.getData("application/x-agentz");
    if (!raw) return;
    const d = JSON.parse(raw) as { kind: "agent" | "task"; id: string };
    const pos = flow.screenToFlowPosition({ x: e.clientX, y: e.clientY });
    if (d.kind === "agent") {
      const a = agents.find((x) => x.id === d.id);
      if (a) addStepFrom({ kind: "agent", agent: a }, pos);
    } else {
      const t = tasks.find((x) => x.id === d.id);
      if (t) addStepFrom({ kind: "task", task: t }, pos);
    }
  };

  const save = async () => {
    const found = validateGraph(graph, meta.process, meta.managerAgentId);
    setIssues(found);
    setServerError(null);
    if (!meta.name.trim()) found.push({ stepId: null, field: "graph", message: "the workflow needs a name" });
    if (found.length) {
      setIssues([...found]);
      return;
    }
    const steps = graphToSteps(graph, meta.process);
    const body = create(WorkflowSchema, {
      id: workflow?.id ?? "",
      etag: workflow && isLatest ? workflow.etag : "",
      name: meta.name.trim(),
      description: meta.description,
      process: meta.process,
      managerAgentId: meta.process === Process.HIERARCHICAL ? meta.managerAgentId : "",
      failurePolicy: meta.failurePolicy,
      inputs: meta.inputs.map((i) => ({ ...i, name: i.name.trim() })),
      steps,
      labels: workflow?.labels ?? {},
      webhookUrls: workflow?.webhookUrls ?? [],
    });
    setSaving(true);
    try {
      const out = workflow
        ? await api.workflows.updateWorkflow({ workflow: body, updateMask: { paths: ["name", "description", "process", "manager_agent_id", "failure_policy", "inputs", "steps"] } })
        : await api.workflows.createWorkflow({ workflow: body, requestId: rid });
      setSaved(`Saved as version ${out.version}.`);
      onSaved(out);
      nav(`/workflows/${out.id}`, { replace: true });
    } catch (e) {
      const ce = ConnectError.from(e);
      const fe = parseFieldError(ce.rawMessage);
      const idx = fe.segments[0] === "workflow" && fe.segments[1] === "steps" && typeof fe.segments[2] === "number" ? fe.segments[2] : null;
      const stepId = fe.stepId ?? (idx !== null ? (steps[idx]?.id ?? null) : null);
      const field = fe.segments.slice(3).join(".").replace(/\.(\d+)/g, "[$1]");
      setServerError({ text: `${codeName(ce.code)}: ${ce.rawMessage}`, detail: field ? `${field}: ${fe.detail}` : fe.detail, stepId, path: fe.path });
      if (stepId) setSel({ kind: "step", id: stepId });
    } finally {
      setSaving(false);
    }
  };

  const detectInputs = () => {
    const texts: string[] = [];
    for (const n of graph.nodes) {
      texts.push(n.step.description, n.step.expectedOutput);
      const a = agents.find((x) => x.id === n.step.agentId);
      if (a) texts.push(a.role, a.goal, a.backstory);
    }
    const m = agents.find((x) => x.id === meta.managerAgentId);
    if (m && meta.process === Process.HIERARCHICAL) texts.push(m.role, m.goal, m.backstory);
    const names = placeholderNames(texts);
    setMeta((x) => ({ ...x, inputs: [...x.inputs, ...names.filter((n) => !x.inputs.some((i) => i.name === n)).map((name) => ({ name, description: "", required: true, defaultValue: "" }))] }));
  };

  const selected = sel.kind === "step" ? graph.nodes.find((n) => n.id === sel.id) : undefined;
  const formIssues = issues.filter((i) => !i.stepId);

  return (
    <section className="builder-page">
      <PageHead title={workflow ? `${workflow.name} · v${workflow.version}` : "New workflow"}>
        {workflow && <Link to={`/workflows/${workflow.id}/versions`}>Versions</Link>}
        {workflow && <Link to={`/runs?workflow=${workflow.id}`}>Runs</Link>}
        {canWrite && workflow && (
          <button type="button" onClick={() => setRunning(true)}>
            Run
          </button>
        )}
        {canWrite && workflow && (
          <button type="button" onClick={() => setTemplating(true)}>
            Save as template
          </button>
        )}
        {canWrite && (
          <button type="button" className="primary" onClick={() => void save()} disabled={saving}>
            {saving ? "Saving…" : workflow ? "Save as new version" : "Create workflow"}
          </button>
        )}
      </PageHead>
      {!isLatest && <p className="warn">You are looking at an older version; saving makes a new latest version from it.</p>}
      <ErrorNote error={agentsError} />
      {saved && (
        <p className="ok" role="status">
          {saved}
        </p>
      )}
      {serverError && (
        <div className="error-note" role="alert" data-testid="save-error">
          {serverError.text}
        </div>
      )}
      {formIssues.length > 0 && (
        <ul className="error-note" role="alert">
          {formIssues.map((i) => (
            <li key={i.message}>{i.message}</li>
          ))}
        </ul>
      )}
      <div className="builder">
        {canWrite && (
          <aside className="palette" aria-label="Add steps">
            <h2>Agents</h2>
            <p className="muted small">Drag onto the canvas, or press Add.</p>
            <ul className="plain">
              {agents.map((a) => (
                <li
                  key={a.id}
                  className="palette-item"
                  draggable
                  onDragStart={(e) => {
                    e.dataTransfer.setData("application/x-agentz", JSON.stringify({ kind: "agent", id: a.id }));
                    e.dataTransfer.effectAllowed = "copy";
                  }}
                  data-agent={a.id}
                >
                  <span>{a.name || a.role}</span>
                  <button type="button" className="small" onClick={() => addStepFrom({ kind: "agent", agent: a })} aria-label={`Add a step for ${a.name || a.role}`}>
                    Add
                  </button>
                </li>
              ))}
            </ul>
            <h2>Tasks</h2>
            <ul className="plain">
              {tasks.slice(0, 20).map((t) => (
                <li
                  key={t.id}
                  className="palette-item"
                  draggable
                  onDragStart={(e) => {
                    e.dataTransfer.setData("application/x-agentz", JSON.stringify({ kind: "task", id: t.id }));
                    e.dataTransfer.effectAllowed = "copy";
                  }}
                >
                  <span>{t.description.slice(0, 40)}</span>
                  <button type="button" className="small" onClick={() => addStepFrom({ kind: "task", task: t })} aria-label={`Add a step from task ${t.description.slice(0, 40)}`}>
                    Add
                  </button>
                </li>
              ))}
              {tasks.length === 0 && <li className="muted small">No standalone tasks.</li>}
            </ul>
            <button type="button" onClick={() => addStepFrom({ kind: "empty" })}>
              Empty step
            </button>
            <button type="button" onClick={() => setGraph(layoutGraph(graph))}>
              Tidy layout
            </button>
          </aside>
        )}
        <div className="canvas" onDragOver={(e) => e.preventDefault()} onDrop={onDrop} aria-label="Workflow canvas" role="region">
          <ReactFlow
            nodes={nodes}
            edges={edges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onConnect={(c: Connection) => canWrite && c.source && c.target && change(addEdge(graph, { source: c.source, target: c.target }))}
            onEdgesDelete={(es) => canWrite && change(es.reduce((g, e) => removeEdge(g, e), graph))}
            onPaneClick={() => setSel({ kind: "workflow" })}
            nodesDraggable={canWrite}
            nodesConnectable={canWrite}
            elementsSelectable
            deleteKeyCode={canWrite ? ["Delete", "Backspace"] : null}
            fitView={graph.nodes.length > 0}
            fitViewOptions={{ maxZoom: 1 }}
            defaultViewport={{ x: 0, y: 0, zoom: 1 }}
            minZoom={0.2}
            maxZoom={2}
            proOptions={{ hideAttribution: true }}
          >
            <Background />
            <Controls showInteractive={false} />
          </ReactFlow>
          {graph.nodes.length === 0 && <p className="canvas-empty">{canWrite ? "Drag an agent here, or use Add." : "This workflow has no steps."}</p>}
        </div>
        <aside className="inspector" aria-label="Properties">
          <div className="tabs" role="tablist">
            <button type="button" role="tab" aria-selected={sel.kind === "workflow"} onClick={() => setSel({ kind: "workflow" })}>
              Workflow
            </button>
            {selected && (
              <button type="button" role="tab" aria-selected>
                Step {selected.id}
              </button>
            )}
          </div>
          <fieldset disabled={!canWrite} className="plain-fieldset">
            {sel.kind === "workflow" || !selected ? (
              <WorkflowSettings meta={meta} setMeta={(m) => (setMeta(m), setSaved(null))} agents={agents} onDetect={detectInputs} serverPath={serverError?.path ?? null} serverText={serverError?.text ?? null} />
            ) : (
              <StepSettings
                key={selected.id}
                graph={graph}
                id={selected.id}
                process={meta.process}
                agents={agents}
                issue={issueByStep.get(selected.id)}
                onChange={change}
                onRename={(to) => {
                  change(renameNode(graph, selected.id, to));
                  setSel({ kind: "step", id: to });
                }}
                onRemove={() => {
                  change(removeNode(graph, selected.id));
                  setSel({ kind: "workflow" });
                }}
              />
            )}
          </fieldset>
        </aside>
      </div>
      <Dialog open={running} title="Start a run" onClose={() => setRunning(false)}>
        {running && workflow && <StartRunForm workflow={workflow} />}
      </Dialog>
      <Dialog open={templating} title="Save as template" onClose={() => setTemplating(false)}>
        {templating && workflow && <SaveTemplate workflow={workflow} onDone={() => setTemplating(false)} />}
      </Dialog>
    </section>
  );
}

function WorkflowSettings({ meta, setMeta, agents, onDetect, serverPath, serverText }: { meta: Meta; setMeta: (m: Meta) => void; agents: Agent[]; onDetect: () => void; serverPath: string | null; serverText: string | null }) {
  const at = (p: string) => (serverPath && (serverPath === `workflow.${p}` || serverPath.startsWith(`workflow.${p}[`) || serverPath.startsWith(`workflow.${p}.`)) ? (serverText ?? undefined) : undefined);
  return (
    <div className="form">
      <Field label="Name" error={at("name")}>
        {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={meta.name} onChange={(e) => setMeta({ ...meta, name: e.target.value })} />}
      </Field>
      <Field label="Description" error={at("description")}>
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} rows={2} value={meta.description} onChange={(e) => setMeta({ ...meta, description: e.target.value })} />}
      </Field>
      <Field label="Process" error={at("process")} hint="Sequential: one step after the other in the numbered order. Parallel: each step as soon as what it needs succeeded. Hierarchical: a manager agent delegates each step.">
        {(p) => (
          <select id={p.id} aria-describedby={p.describedBy} value={meta.process} onChange={(e) => setMeta({ ...meta, process: Number(e.target.value) as Process })}>
            <option value={Process.SEQUENTIAL}>sequential</option>
            <option value={Process.PARALLEL}>parallel (DAG)</option>
            <option value={Process.HIERARCHICAL}>hierarchical (manager)</option>
          </select>
        )}
      </Field>
      {meta.process === Process.HIERARCHICAL && (
        <Field label="Manager agent" error={at("manager_agent_id")}>
          {(p) => (
            <select id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={meta.managerAgentId} onChange={(e) => setMeta({ ...meta, managerAgentId: e.target.value })}>
              <option value="">choose the manager</option>
              {agents.map((a) => (
                <option key={a.id} value={a.id}>
                  {a.name || a.role}
                </option>
              ))}
            </select>
          )}
        </Field>
      )}
      <Field label="When a step fails" error={at("failure_policy")}>
        {(p) => (
          <select id={p.id} aria-describedby={p.describedBy} value={meta.failurePolicy} onChange={(e) => setMeta({ ...meta, failurePolicy: Number(e.target.value) as FailurePolicy })}>
            <option value={FailurePolicy.FAIL_FAST}>cancel the rest (fail fast)</option>
            <option value={FailurePolicy.CONTINUE}>continue independent steps</option>
          </select>
        )}
      </Field>
      <fieldset>
        <legend>Inputs</legend>
        {at("inputs") && (
          <p className="field-error" role="alert">
            {at("inputs")}
          </p>
        )}
        {meta.inputs.map((inp, i) => (
          <div key={i} className="input-row">
            <input aria-label={`input ${i + 1} name`} value={inp.name} placeholder="name" onChange={(e) => setMeta({ ...meta, inputs: meta.inputs.map((x, k) => (k === i ? { ...x, name: e.target.value } : x)) })} />
            <input aria-label={`input ${i + 1} default`} value={inp.defaultValue} placeholder="default" onChange={(e) => setMeta({ ...meta, inputs: meta.inputs.map((x, k) => (k === i ? { ...x, defaultValue: e.target.value } : x)) })} />
            <label className="check">
              <input type="checkbox" checked={inp.required} onChange={(e) => setMeta({ ...meta, inputs: meta.inputs.map((x, k) => (k === i ? { ...x, required: e.target.checked } : x)) })} /> required
            </label>
            <button type="button" className="ghost small" aria-label={`remove input ${inp.name || i + 1}`} onClick={() => setMeta({ ...meta, inputs: meta.inputs.filter((_, k) => k !== i) })}>
              ×
            </button>
          </div>
        ))}
        <div className="actions">
          <button type="button" className="small" onClick={() => setMeta({ ...meta, inputs: [...meta.inputs, { name: "", description: "", required: true, defaultValue: "" }] })}>
            Add input
          </button>
          <button type="button" className="small" onClick={onDetect}>
            Add inputs used as {"{placeholders}"}
          </button>
        </div>
      </fieldset>
    </div>
  );
}

function StepSettings(props: {
  graph: WorkflowGraph;
  id: string;
  process: Process;
  agents: Agent[];
  issue: string | undefined;
  onChange: (g: WorkflowGraph) => void;
  onRename: (to: string) => void;
  onRemove: () => void;
}) {
  const { graph, id, process, agents } = props;
  const n = graph.nodes.find((x) => x.id === id)!;
  const [newId, setNewId] = useState(id);
  const [timeout, setTimeoutText] = useState(durationText(n.step.timeout));
  const rp = n.step.retryPolicy;
  const [maxAttempts, setMaxAttempts] = useState(rp?.maxAttempts ? String(rp.maxAttempts) : "");
  const set = (patch: Parameters<typeof updateStep>[2]) => props.onChange(updateStep(graph, id, patch));
  const others = graph.nodes.filter((x) => x.id !== id);
  const needs = new Set(graph.edges.filter((e) => e.target === id).map((e) => e.source));
  const upstream = upstreamOf(graph, id);
  return (
    <div className="form">
      {props.issue && (
        <p className="field-error" role="alert">
          {props.issue}
        </p>
      )}
      <Field label="Step id" hint="[a-z0-9_-], unique in the workflow.">
        {(p) => <input id={p.id} aria-describedby={p.describedBy} value={newId} onChange={(e) => setNewId(e.target.value)} onBlur={() => newId && newId !== id && !graph.nodes.some((x) => x.id === newId) && props.onRename(newId)} />}
      </Field>
      <Field label={process === Process.HIERARCHICAL ? "Agent (the manager delegates to it)" : "Agent"}>
        {(p) => (
          <select id={p.id} aria-describedby={p.describedBy} value={n.step.agentId} onChange={(e) => set({ agentId: e.target.value })}>
            <option value="">{process === Process.HIERARCHICAL ? "let the manager choose" : "choose an agent"}</option>
            {agents.map((a) => (
              <option key={a.id} value={a.id}>
                {a.name || a.role}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Description" hint="{name} is replaced by the run input of that name.">
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} rows={4} value={n.step.description} onChange={(e) => set({ description: e.target.value })} />}
      </Field>
      <Field label="Expected output">
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} rows={2} value={n.step.expectedOutput} onChange={(e) => set({ expectedOutput: e.target.value })} />}
      </Field>
      <fieldset>
        <legend>{process === Process.PARALLEL ? "Depends on" : "Needs the output of"}</legend>
        {others.length === 0 && <p className="muted small">No other steps.</p>}
        {others.map((o) => (
          <label key={o.id} className="check">
            <input
              type="checkbox"
              checked={needs.has(o.id)}
              onChange={(e) => props.onChange(e.target.checked ? addEdge(graph, { source: o.id, target: id }) : removeEdge(graph, { source: o.id, target: id }))}
            />{" "}
            {o.id}
          </label>
        ))}
      </fieldset>
      {process === Process.PARALLEL && (
        <fieldset>
          <legend>Context from</legend>
          <p className="muted small">Empty = the outputs of the steps it depends on.</p>
          {[...upstream].map((u) => (
            <label key={u} className="check">
              <input type="checkbox" checked={n.step.contextFrom.includes(u)} onChange={(e) => set({ contextFrom: e.target.checked ? [...n.step.contextFrom, u] : n.step.contextFrom.filter((c) => c !== u) })} /> {u}
            </label>
          ))}
        </fieldset>
      )}
      <div className="grid2">
        <Field label="Timeout per attempt" hint="e.g. 2m; empty = 10 minutes.">
          {(p) => (
            <input
              id={p.id}
              aria-describedby={p.describedBy}
              value={timeout}
              onChange={(e) => setTimeoutText(e.target.value)}
              onBlur={() => {
                const d = timeout.trim() ? parseDuration(timeout) : null;
                set({ timeout: d ? create(WorkflowSchema, { steps: [{ timeout: d }] }).steps[0]!.timeout : undefined });
              }}
            />
          )}
        </Field>
        <Field label="Max attempts" hint="Including the first; empty = unlimited.">
          {(p) => (
            <input
              id={p.id}
              aria-describedby={p.describedBy}
              inputMode="numeric"
              value={maxAttempts}
              onChange={(e) => setMaxAttempts(e.target.value)}
              onBlur={() => {
                const v = Number(maxAttempts);
                const base = create(WorkflowSchema, { steps: [{ retryPolicy: rp ?? {} }] }).steps[0]!.retryPolicy!;
                base.maxAttempts = Number.isInteger(v) && v > 0 ? v : 0;
                set({ retryPolicy: maxAttempts.trim() || rp ? base : undefined });
              }}
            />
          )}
        </Field>
      </div>
      <button type="button" className="danger" onClick={props.onRemove}>
        Remove step
      </button>
    </div>
  );
}

function SaveTemplate({ workflow, onDone }: { workflow: Workflow; onDone: () => void }) {
  const [name, setName] = useState(workflow.name);
  const [description, setDescription] = useState(workflow.description);
  const [err, setErr] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  return (
    <form
      className="form"
      onSubmit={(e) => {
        e.preventDefault();
        api.workflows.saveAsTemplate({ workflowId: workflow.id, name, description }).then(
          (t) => {
            setDone(`Saved template ${t.name}.`);
            setTimeout(onDone, 800);
          },
          setErr,
        );
      }}
      noValidate
    >
      <ErrorNote error={err} />
      {done && <p className="ok">{done}</p>}
      <Field label="Template name">{(p) => <input id={p.id} value={name} onChange={(e) => setName(e.target.value)} />}</Field>
      <Field label="Description">{(p) => <textarea id={p.id} rows={2} value={description} onChange={(e) => setDescription(e.target.value)} />}</Field>
      <button type="submit" className="primary">
        Save template
      </button>
    </form>
  );
}
