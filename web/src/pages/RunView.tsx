// The live run view: the workflow's DAG coloured by step state, progress bars, a timeline of the
// steps, every event (virtualised), the tokens the model streams, and cancel / resume.
//
// It survives a reload (GetRun, then WatchRun from sequence 0: the durable history is replayed,
// so the event list is rebuilt exactly) and a dropped connection (the stream reopens with
// after_sequence = the last durable sequence; duplicates are dropped by sequence).
import { Background, Controls, ReactFlow, ReactFlowProvider, type Edge } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api/client";
import { RunEventStore } from "../api/eventStore";
import { useLoad, useResumable } from "../api/hooks";
import { isTerminalRun, runFromSnapshot, taskStatusName, type RunModel } from "../api/runState";
import { useAuth } from "../auth/AuthContext";
import { RunStatus, TaskStatus } from "../gen/agentz/v1/common_pb";
import type { Event } from "../gen/agentz/v1/event_pb";
import type { Workflow, WorkflowRun } from "../gen/agentz/v1/workflow_pb";
import { workflowToGraph } from "../lib/graph";
import { fmtCost, fmtInt, fmtMs, fmtTimeMs } from "../lib/format";
import { nodeTypes, type StepFlowNode } from "../components/StepNode";
import { StreamBadge } from "../components/StreamBadge";
import { VirtualList } from "../components/VirtualList";
import { ErrorNote, Loading, PageHead, ProgressBar, StatusBadge, taskClass } from "../components/ui";

export default function RunViewPage() {
  const { id = "" } = useParams();
  const run = useLoad(() => api.workflows.getRun({ id }), [id]);
  const wf = useLoad(async () => (run.data ? api.workflows.getWorkflow({ id: run.data.workflowId, version: run.data.workflowVersion }) : undefined), [run.data?.workflowId, run.data?.workflowVersion]);
  const agents = useLoad(async () => new Map((await api.agents.listAgents({ pageSize: 1000 })).agents.map((a) => [a.id, a.name || a.role])), []);
  if (run.loading && !run.data) return <Loading what="the run" />;
  if (!run.data) return <ErrorNote error={run.error} />;
  return <RunView key={id} initial={run.data} workflow={wf.data} workflowError={wf.error} agentNames={agents.data ?? new Map<string, string>()} />;
}

function RunView({ initial, workflow, workflowError, agentNames }: { initial: WorkflowRun; workflow: Workflow | undefined; workflowError: unknown; agentNames: Map<string, string> }) {
  const auth = useAuth();
  const [store] = useState(() => new RunEventStore(runFromSnapshot(initial)));
  const snap = useSyncExternalStore(store.subscribe, store.getSnapshot);
  const [gen, setGen] = useState(0);
  const [final, setFinal] = useState<WorkflowRun>(initial);
  const [actionError, setActionError] = useState<unknown>(null);
  const [now, setNow] = useState(Date.now());
  const m = snap.model;

  const stream = useResumable<Event>(
    () => ({
      open: (after, signal, opened) => api.workflows.watchRun({ runId: initial.id, afterSequence: after, includeTokens: true }, { signal, onHeader: opened }),
      after: store.getSnapshot().model.lastSequence,
      onEvent: (e) => store.push(e),
      // Fold in what is queued before the state says "finished", so the two never disagree.
      onState: (st) => {
        if (st.phase !== "live" && st.phase !== "connecting") store.flush();
      },
      endsWhenDone: true,
    }),
    [initial.id, gen],
  );

  // When the stream has ended, read the run once more for the outputs and usage.
  useEffect(() => {
    if (stream?.phase !== "ended") return;
    let live = true;
    api.workflows.getRun({ id: initial.id }).then((r) => {
      if (!live) return;
      setFinal(r);
      store.reset(mergeSnapshot(store.getSnapshot().model, r));
    }, setActionError);
    return () => {
      live = false;
    };
  }, [stream?.phase, initial.id, store]);

  // A step that finished: read the run again for its output (token deltas are best effort, and
  // a page opened mid-step saw only the end of them).
  useEffect(() => {
    if (m.completedSteps === 0 || stream?.phase === "ended") return;
    let live = true;
    api.workflows.getRun({ id: initial.id }).then(
      (r) => live && setFinal(r),
      () => {},
    );
    return () => {
      live = false;
    };
  }, [m.completedSteps, initial.id, stream?.phase]);

  useEffect(() => {
    if (isTerminalRun(m.status)) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [m.status]);

  const act = async (f: () => Promise<WorkflowRun>, restart: boolean) => {
    setActionError(null);
    try {
      const r = await f();
      setFinal(r);
      if (restart) setGen((g) => g + 1);
    } catch (e) {
      setActionError(e);
    }
  };

  const canWrite = auth.can("write");
  const running = !isTerminalRun(m.status);
  const progress = m.totalSteps ? m.completedSteps / m.totalSteps : 0;
  return (
    <section className="run-view" data-run-status={RunStatus[m.status]?.toLowerCase()}>
      <PageHead title={`Run ${initial.id.slice(0, 8)}`}>
        <StreamBadge state={stream} />
        <StatusBadge kind="run" status={m.status} />
        {canWrite && running && (
          <button type="button" className="danger" onClick={() => void act(() => api.workflows.cancelRun({ id: initial.id, reason: "cancelled in the web UI" }), false)}>
            Cancel run
          </button>
        )}
        {canWrite && (m.status === RunStatus.FAILED || m.status === RunStatus.CANCELLED) && (
          <button type="button" className="primary" onClick={() => void act(() => api.workflows.resumeRun({ id: initial.id }), true)}>
            Resume
          </button>
        )}
      </PageHead>
      <p className="muted">
        {workflow ? <Link to={`/workflows/${workflow.id}?version=${workflow.version}`}>{workflow.name}</Link> : initial.workflowId} v{initial.workflowVersion} · inputs:{" "}
        {Object.entries(initial.inputs)
          .map(([k, v]) => `${k}=${v}`)
          .join(", ") || "none"}
      </p>
      <ErrorNote error={actionError ?? workflowError} />
      {m.error && (
        <div className="error-note" role="status">
          {m.error.type}: {m.error.message}
        </div>
      )}
      <div className="run-progress">
        <ProgressBar value={isTerminalRun(m.status) && m.status === RunStatus.SUCCEEDED ? 1 : progress} label="run progress" />
        <span data-testid="run-progress">
          {m.completedSteps}/{m.totalSteps} steps
        </span>
        <span className="muted">
          {fmtInt(final.usage?.totalTokens)} tokens · {fmtCost(final.usage?.costUsd)}
        </span>
      </div>
      <div className="run-grid">
        <div className="dag" aria-label="Steps graph" role="region">
          {workflow ? (
            <ReactFlowProvider>
              <RunDag workflow={workflow} model={m} agentNames={agentNames} />
            </ReactFlowProvider>
          ) : (
            <Loading what="the graph" />
          )}
        </div>
        <Timeline model={m} now={now} />
      </div>
      <h2>Steps</h2>
      <div className="steps-live">
        {m.order.map((sid) => {
          const s = m.steps[sid]!;
          const out = final.steps.find((x) => x.stepId === sid)?.output?.raw ?? s.output;
          return (
            <article key={sid} className={`step-live s-${taskClass(s.status)}`} data-step={sid} data-status={taskStatusName(s.status)} aria-labelledby={`st-${sid}`}>
              <header>
                <h3 id={`st-${sid}`}>{sid}</h3>
                <StatusBadge kind="task" status={s.status} />
                {s.attempt > 1 && <span className="muted small">attempt {s.attempt}</span>}
                {s.taskId && <Link to={`/tasks/${s.taskId}`}>task</Link>}
              </header>
              {s.status === TaskStatus.RUNNING && <ProgressBar value={s.progress} label={`${sid} progress`} />}
              {s.progressMessage && s.status === TaskStatus.RUNNING && <p className="muted small">{s.progressMessage}</p>}
              {s.error && (
                <p className="field-error">
                  {s.error.type}: {s.error.message}
                </p>
              )}
              {(out || s.tokens) && (
                <pre className={`output${out ? "" : " live"}`} data-testid={`tokens-${sid}`} aria-label={out ? `${sid} output` : `${sid}: the model's text so far`}>
                  {out ?? s.tokens}
                </pre>
              )}
            </article>
          );
        })}
      </div>
      {final.output && !running && (
        <>
          <h2>Run output</h2>
          <pre className="output" data-testid="run-output">
            {final.output.raw}
          </pre>
        </>
      )}
      <h2>Events</h2>
      <VirtualList
        label="Run events"
        items={snap.lines}
        version={snap.version}
        rowHeight={26}
        height={360}
        itemKey={(l) => l.key}
        render={(l) => (
          <div className={`event lvl-${l.level}`} data-seq={String(l.sequence)}>
            <span className="seq">{l.sequence ? `#${l.sequence}` : "·"}</span>
            <span className="time">{fmtTimeMs(l.timeMs)}</span>
            <span className="text">{l.text}</span>
          </div>
        )}
      />
      <p className="muted small" data-testid="event-count" data-count={snap.lines.length} data-applied={store.applied}>
        {snap.lines.length} events · last sequence {String(m.lastSequence)}
        {stream && stream.reconnects > 0 ? ` · reconnected ${stream.reconnects}×` : ""}
      </p>
    </section>
  );
}

/** A fresh GetRun over the live model: newer statuses and outputs, the tokens kept. */
function mergeSnapshot(m: RunModel, r: WorkflowRun): RunModel {
  const fresh = runFromSnapshot(r);
  const steps = { ...fresh.steps };
  for (const id of Object.keys(steps)) {
    const old = m.steps[id];
    if (old) steps[id] = { ...steps[id]!, tokens: old.tokens, tokensAttempt: old.tokensAttempt, progressMessage: old.progressMessage };
  }
  return { ...fresh, steps, lastSequence: m.lastSequence, lastEventMs: m.lastEventMs };
}

function RunDag({ workflow, model, agentNames }: { workflow: Workflow; model: RunModel; agentNames: Map<string, string> }) {
  const graph = useMemo(() => workflowToGraph(workflow), [workflow]);
  const nodes: StepFlowNode[] = graph.nodes.map((n) => {
    const s = model.steps[n.id];
    return {
      id: n.id,
      type: "step",
      position: n.position,
      draggable: false,
      connectable: false,
      data: {
        stepId: n.id,
        agent: n.step.agentId ? (agentNames.get(n.step.agentId) ?? n.step.agentId.slice(0, 8)) : "the manager",
        description: n.step.description,
        status: s ? taskClass(s.status) : "pending",
        statusLabel: s ? taskStatusName(s.status) : "pending",
        progress: s?.progress,
      },
    };
  });
  const edges: Edge[] = graph.edges.map((e) => {
    const active = model.steps[e.source]?.status === TaskStatus.SUCCEEDED && model.steps[e.target]?.status === TaskStatus.RUNNING;
    return { id: `${e.source}->${e.target}`, source: e.source, target: e.target, animated: active };
  });
  return (
    <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} nodesDraggable={false} nodesConnectable={false} fitView fitViewOptions={{ maxZoom: 1 }} proOptions={{ hideAttribution: true }}>
      <Background />
      <Controls showInteractive={false} />
    </ReactFlow>
  );
}

function Timeline({ model, now }: { model: RunModel; now: number }) {
  const starts = model.order.map((id) => model.steps[id]!.startMs).filter((x): x is number => x !== null);
  const t0 = model.startMs ?? (starts.length ? Math.min(...starts) : null);
  const ends = model.order.map((id) => model.steps[id]!.endMs ?? (model.steps[id]!.startMs !== null ? now : null)).filter((x): x is number => x !== null);
  const t1 = model.endMs ?? (ends.length ? Math.max(...ends, now) : null);
  const span = t0 !== null && t1 !== null ? Math.max(1, t1 - t0) : 1;
  return (
    <div className="timeline" role="table" aria-label="Timeline of the steps">
      <div role="rowgroup">
        {model.order.map((id) => {
          const s = model.steps[id]!;
          const start = s.startMs;
          const end = s.endMs ?? (start !== null ? (isTerminalRun(model.status) ? start : now) : null);
          const left = t0 !== null && start !== null ? ((start - t0) / span) * 100 : 0;
          const width = start !== null && end !== null ? Math.max(0.5, ((end - start) / span) * 100) : 0;
          return (
            <div key={id} className="tl-row" role="row">
              <span className="tl-label" role="rowheader">
                {id}
              </span>
              <span className="tl-track" role="cell" aria-label={start !== null ? `${id}: started ${fmtTimeMs(start)}, ${s.endMs ? `took ${fmtMs(s.endMs - start)}` : "running"}` : `${id}: not started`}>
                {start !== null && <span className={`tl-bar s-${taskClass(s.status)}`} style={{ left: `${left}%`, width: `${width}%` }} />}
              </span>
              <span className="tl-time" role="cell">
                {start !== null && s.endMs ? fmtMs(s.endMs - start) : start !== null ? "…" : ""}
              </span>
            </div>
          );
        })}
      </div>
      {t0 !== null && (
        <p className="muted small">
          {fmtTimeMs(t0)} – {model.endMs ? fmtTimeMs(model.endMs) : "now"} ({fmtMs(span)})
        </p>
      )}
      {model.createMs !== null && model.startMs === null && <p className="muted small">queued since {fmtTimeMs(model.createMs)}</p>}
    </div>
  );
}

