// Analytics: per workflow (GetWorkflowAnalytics) and per agent (GetAgentMetrics, GetTaskStats):
// p50/p95 durations, success rate, retries, tokens and cost, over a window and as charts over
// time. The API has no time-series call, so each chart point is one call for its bucket.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useMemo } from "react";
import { Link, useSearchParams } from "react-router";
import { api } from "../api/client";
import { useLoad } from "../api/hooks";
import { durationMs, fmtCost, fmtDuration, fmtInt, fmtPct } from "../lib/format";
import { LineChart, type Series } from "../components/Chart";
import { ErrorNote, Loading, PageHead, Stat } from "../components/ui";

const WINDOWS: Record<string, { label: string; ms: number; buckets: number }> = {
  "24h": { label: "last 24 hours", ms: 24 * 3600e3, buckets: 12 },
  "7d": { label: "last 7 days", ms: 7 * 24 * 3600e3, buckets: 14 },
  "30d": { label: "last 30 days", ms: 30 * 24 * 3600e3, buckets: 15 },
};

function buckets(windowKey: string, end: number) {
  const w = WINDOWS[windowKey] ?? WINDOWS["7d"]!;
  const size = w.ms / w.buckets;
  return Array.from({ length: w.buckets }, (_, i) => ({ start: end - w.ms + i * size, end: end - w.ms + (i + 1) * size }));
}

const ts = (ms: number) => timestampFromMs(Math.round(ms));

export default function Analytics() {
  const [params, setParams] = useSearchParams();
  const workflowId = params.get("workflow") ?? "";
  const agentId = params.get("agent") ?? "";
  const win = params.get("window") ?? "7d";
  const workflows = useLoad(async () => (await api.workflows.listWorkflows({ pageSize: 1000 })).workflows, []);
  const agents = useLoad(async () => (await api.agents.listAgents({ pageSize: 1000 })).agents, []);
  const set = (k: string, v: string) => {
    const p = new URLSearchParams(params);
    if (v) p.set(k, v);
    else p.delete(k);
    setParams(p);
  };
  const wfId = workflowId || workflows.data?.[0]?.id || "";
  return (
    <section>
      <PageHead title="Analytics" />
      <div className="toolbar">
        <label htmlFor="an-wf">Workflow</label>
        <select id="an-wf" value={wfId} onChange={(e) => set("workflow", e.target.value)}>
          {(workflows.data ?? []).map((w) => (
            <option key={w.id} value={w.id}>
              {w.name}
            </option>
          ))}
        </select>
        <label htmlFor="an-agent">Agent</label>
        <select id="an-agent" value={agentId} onChange={(e) => set("agent", e.target.value)}>
          <option value="">all agents (tasks)</option>
          {(agents.data ?? []).map((a) => (
            <option key={a.id} value={a.id}>
              {a.name || a.role}
            </option>
          ))}
        </select>
        <label htmlFor="an-win">Window</label>
        <select id="an-win" value={win} onChange={(e) => set("window", e.target.value)}>
          {Object.entries(WINDOWS).map(([k, w]) => (
            <option key={k} value={k}>
              {w.label}
            </option>
          ))}
        </select>
      </div>
      <ErrorNote error={workflows.error ?? agents.error} />
      {wfId ? (
        <WorkflowAnalyticsView key={`${wfId}-${win}`} workflowId={wfId} win={win} name={(workflows.data ?? []).find((w) => w.id === wfId)?.name ?? wfId.slice(0, 8)} />
      ) : (
        workflows.data && <p className="muted">No workflows yet.</p>
      )}
      <AgentAnalyticsView key={`${agentId}-${win}`} agentId={agentId} win={win} agentName={(agents.data ?? []).find((a) => a.id === agentId)?.name ?? ""} />
    </section>
  );
}

function WorkflowAnalyticsView({ workflowId, win, name }: { workflowId: string; win: string; name: string }) {
  const end = useMemo(() => Date.now(), []);
  const w = WINDOWS[win] ?? WINDOWS["7d"]!;
  const total = useLoad(() => api.workflows.getWorkflowAnalytics({ workflowId, startTime: ts(end - w.ms), endTime: ts(end) }), [workflowId, win]);
  const series = useLoad(
    () => Promise.all(buckets(win, end).map((b) => api.workflows.getWorkflowAnalytics({ workflowId, startTime: ts(b.start), endTime: ts(b.end) }).then((a) => ({ b, a })))),
    [workflowId, win],
  );
  const charts = useMemo(() => {
    const pts = series.data ?? [];
    const x = pts.map((p) => Math.round(p.b.end / 1000));
    const dur: Series[] = [
      { label: "p50 (s)", values: pts.map((p) => (p.a.runsTotal ? (durationMs(p.a.p50Duration) ?? 0) / 1000 : null)) },
      { label: "p95 (s)", values: pts.map((p) => (p.a.runsTotal ? (durationMs(p.a.p95Duration) ?? 0) / 1000 : null)) },
    ];
    const rate: Series[] = [{ label: "success rate (%)", values: pts.map((p) => (p.a.runsSucceeded + p.a.runsFailed + p.a.runsCancelled ? p.a.successRate * 100 : null)) }];
    const tokens: Series[] = [{ label: "tokens", values: pts.map((p) => Number(p.a.usage?.totalTokens ?? 0n)) }];
    const cost: Series[] = [{ label: "cost ($)", values: pts.map((p) => p.a.usage?.costUsd ?? 0) }];
    const runs: Series[] = [
      { label: "runs", values: pts.map((p) => Number(p.a.runsTotal)) },
      { label: "retries", values: pts.map((p) => Number(p.a.retries)) },
    ];
    return { x, dur, rate, tokens, cost, runs };
  }, [series.data]);
  const a = total.data;
  return (
    <section aria-labelledby="wf-an-h">
      <h2 id="wf-an-h">
        Workflow <Link to={`/workflows/${workflowId}`}>{name}</Link> · {w.label}
      </h2>
      <ErrorNote error={total.error ?? series.error} />
      {!a ? (
        <Loading what="analytics" />
      ) : (
        <>
          <div className="stats" data-testid="workflow-stats">
            <Stat label="runs" value={fmtInt(a.runsTotal)} />
            <Stat label="succeeded" value={fmtInt(a.runsSucceeded)} />
            <Stat label="failed" value={fmtInt(a.runsFailed)} />
            <Stat label="running" value={fmtInt(a.runsRunning)} />
            <Stat label="success rate" value={fmtPct(a.successRate)} />
            <Stat label="p50 duration" value={fmtDuration(a.p50Duration)} />
            <Stat label="p95 duration" value={fmtDuration(a.p95Duration)} />
            <Stat label="retries" value={fmtInt(a.retries)} />
            <Stat label="tokens" value={fmtInt(a.usage?.totalTokens)} />
            <Stat label="cost" value={fmtCost(a.usage?.costUsd)} />
          </div>
          {(a.slowestStepId || a.mostFailingStepId) && (
            <p className="muted">
              {a.slowestStepId && <>Slowest step: {a.slowestStepId}. </>}
              {a.mostFailingStepId && <>Most failing step: {a.mostFailingStepId}.</>}
            </p>
          )}
          <div className="table-wrap">
            <table>
              <caption>Steps</caption>
              <thead>
                <tr>
                  <th scope="col">Step</th>
                  <th scope="col">Runs</th>
                  <th scope="col">Success</th>
                  <th scope="col">p50</th>
                  <th scope="col">p95</th>
                  <th scope="col">Retries</th>
                  <th scope="col">Tokens</th>
                  <th scope="col">Cost</th>
                </tr>
              </thead>
              <tbody>
                {a.steps.map((s) => (
                  <tr key={s.stepId}>
                    <th scope="row">{s.stepId}</th>
                    <td>{fmtInt(s.runs)}</td>
                    <td>{fmtPct(s.successRate)}</td>
                    <td>{fmtDuration(s.p50Duration)}</td>
                    <td>{fmtDuration(s.p95Duration)}</td>
                    <td>{fmtInt(s.retries)}</td>
                    <td>{fmtInt(s.usage?.totalTokens)}</td>
                    <td>{fmtCost(s.usage?.costUsd)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
      {series.data && (
        <div className="charts">
          <LineChart title="Run duration" x={charts.x} series={charts.dur} format={(v) => `${v.toFixed(1)}s`} />
          <LineChart title="Success rate" x={charts.x} series={charts.rate} format={(v) => `${v.toFixed(0)}%`} yRange={[0, 100]} />
          <LineChart title="Runs and retries" x={charts.x} series={charts.runs} />
          <LineChart title="Tokens" x={charts.x} series={charts.tokens} />
          <LineChart title="Cost" x={charts.x} series={charts.cost} format={(v) => `$${v.toFixed(3)}`} />
        </div>
      )}
    </section>
  );
}

function AgentAnalyticsView({ agentId, win, agentName }: { agentId: string; win: string; agentName: string }) {
  const end = useMemo(() => Date.now(), []);
  const w = WINDOWS[win] ?? WINDOWS["7d"]!;
  const stats = useLoad(() => api.tasks.getTaskStats({ agentId, startTime: ts(end - w.ms), endTime: ts(end) }), [agentId, win]);
  const series = useLoad(
    () =>
      Promise.all(
        buckets(win, end).map(async (b) => ({
          b,
          s: await api.tasks.getTaskStats({ agentId, startTime: ts(b.start), endTime: ts(b.end) }),
          m: agentId ? await api.agents.getAgentMetrics({ agentId, startTime: ts(b.start), endTime: ts(b.end) }) : null,
        })),
      ),
    [agentId, win],
  );
  const charts = useMemo(() => {
    const pts = series.data ?? [];
    return {
      x: pts.map((p) => Math.round(p.b.end / 1000)),
      dur: [
        { label: "p50 (s)", values: pts.map((p) => (Number(p.s.succeeded + p.s.failed + p.s.cancelled) ? (durationMs(p.s.p50Duration) ?? 0) / 1000 : null)) },
        { label: "p95 (s)", values: pts.map((p) => (Number(p.s.succeeded + p.s.failed + p.s.cancelled) ? (durationMs(p.s.p95Duration) ?? 0) / 1000 : null)) },
      ],
      rate: [{ label: "success rate (%)", values: pts.map((p) => (Number(p.s.succeeded + p.s.failed + p.s.cancelled) ? p.s.successRate * 100 : null)) }],
      tokens: [{ label: "tokens", values: pts.map((p) => Number(p.s.usage?.totalTokens ?? 0n)) }],
      cost: [{ label: "cost ($)", values: pts.map((p) => p.s.usage?.costUsd ?? 0) }],
      tasks: [
        { label: "tasks", values: pts.map((p) => Number(p.s.total)) },
        { label: "retries", values: pts.map((p) => Number(p.s.retries)) },
      ],
    };
  }, [series.data]);
  const s = stats.data;
  return (
    <section aria-labelledby="ag-an-h">
      <h2 id="ag-an-h">{agentId ? `Agent ${agentName || agentId.slice(0, 8)}` : "All tasks"} · {w.label}</h2>
      <ErrorNote error={stats.error ?? series.error} />
      {!s ? (
        <Loading what="task statistics" />
      ) : (
        <div className="stats" data-testid="agent-stats">
          <Stat label="tasks" value={fmtInt(s.total)} />
          <Stat label="succeeded" value={fmtInt(s.succeeded)} />
          <Stat label="failed" value={fmtInt(s.failed)} />
          <Stat label="running" value={fmtInt(s.running)} />
          <Stat label="queued" value={fmtInt(s.queued)} />
          <Stat label="success rate" value={fmtPct(s.successRate)} />
          <Stat label="p50 duration" value={fmtDuration(s.p50Duration)} />
          <Stat label="p95 duration" value={fmtDuration(s.p95Duration)} />
          <Stat label="retries" value={fmtInt(s.retries)} />
          <Stat label="tokens" value={fmtInt(s.usage?.totalTokens)} />
          <Stat label="cost" value={fmtCost(s.usage?.costUsd)} />
        </div>
      )}
      {series.data && (
        <div className="charts">
          <LineChart title="Task duration" x={charts.x} series={charts.dur} format={(v) => `${v.toFixed(1)}s`} />
          <LineChart title="Task success rate" x={charts.x} series={charts.rate} format={(v) => `${v.toFixed(0)}%`} yRange={[0, 100]} />
          <LineChart title="Tasks and retries" x={charts.x} series={charts.tasks} />
          <LineChart title="Tokens" x={charts.x} series={charts.tokens} />
          <LineChart title="Cost" x={charts.x} series={charts.cost} format={(v) => `$${v.toFixed(3)}`} />
        </div>
      )}
    </section>
  );
}
