// Runs: the list (optionally of one workflow), and starting a new one.
import { useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api } from "../api/client";
import { useLoad } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { RunStatus } from "../gen/agentz/v1/common_pb";
import type { WorkflowRun } from "../gen/agentz/v1/workflow_pb";
import { fmtCost, fmtInt, fmtMs, fmtTime } from "../lib/format";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { StartRunForm } from "../components/StartRun";
import { Dialog, Empty, ErrorNote, Loading, MoreButton, PageHead, StatusBadge } from "../components/ui";

export default function Runs() {
  const auth = useAuth();
  const [params, setParams] = useSearchParams();
  const workflowId = params.get("workflow") ?? "";
  const status = Number(params.get("status") ?? 0) as RunStatus;
  const [extra, setExtra] = useState<{ runs: WorkflowRun[]; next: string } | null>(null);
  const [starting, setStarting] = useState(false);
  const workflows = useLoad(async () => (await api.workflows.listWorkflows({ pageSize: 1000 })).workflows, []);
  const list = useLoad(async () => {
    setExtra(null);
    return api.workflows.listRuns({ workflowId, status, pageSize: 50 });
  }, [workflowId, status]);
  const names = new Map((workflows.data ?? []).map((w) => [w.id, w.name]));
  const runs = [...(list.data?.runs ?? []), ...(extra?.runs ?? [])];
  const next = extra ? extra.next : (list.data?.nextPageToken ?? "");
  const wf = (workflows.data ?? []).find((w) => w.id === workflowId);
  const setParam = (k: string, v: string) => {
    const p = new URLSearchParams(params);
    if (v && v !== "0") p.set(k, v);
    else p.delete(k);
    setParams(p);
  };
  return (
    <section>
      <PageHead title={wf ? `Runs of ${wf.name}` : "Runs"}>
        {auth.can("write") && wf && (
          <button type="button" className="primary" onClick={() => setStarting(true)}>
            Start a run
          </button>
        )}
      </PageHead>
      <div className="toolbar">
        <label htmlFor="r-wf">Workflow</label>
        <select id="r-wf" value={workflowId} onChange={(e) => setParam("workflow", e.target.value)}>
          <option value="">any</option>
          {(workflows.data ?? []).map((w) => (
            <option key={w.id} value={w.id}>
              {w.name}
            </option>
          ))}
        </select>
        <label htmlFor="r-status">Status</label>
        <select id="r-status" value={status} onChange={(e) => setParam("status", e.target.value)}>
          <option value={0}>any</option>
          {[RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED].map((s) => (
            <option key={s} value={s}>
              {RunStatus[s]!.toLowerCase()}
            </option>
          ))}
        </select>
      </div>
      <ErrorNote error={list.error} />
      {list.loading && !list.data ? (
        <Loading what="runs" />
      ) : runs.length === 0 ? (
        <Empty>No runs{wf ? " of this workflow" : ""} yet.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Runs</caption>
            <thead>
              <tr>
                <th scope="col">Run</th>
                <th scope="col">Workflow</th>
                <th scope="col">Status</th>
                <th scope="col">Steps done</th>
                <th scope="col">Took</th>
                <th scope="col">Tokens</th>
                <th scope="col">Cost</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {runs.map((r) => (
                <tr key={r.id}>
                  <td>
                    <Link to={`/runs/${r.id}`}>{r.id.slice(0, 8)}</Link>
                  </td>
                  <td>
                    {names.get(r.workflowId) ?? r.workflowId.slice(0, 8)} v{r.workflowVersion}
                  </td>
                  <td>
                    <StatusBadge kind="run" status={r.status} />
                  </td>
                  <td>
                    {r.steps.filter((s) => s.endTime).length}/{r.steps.length}
                  </td>
                  <td>{r.startTime && r.endTime ? fmtMs(timestampMs(r.endTime) - timestampMs(r.startTime)) : "—"}</td>
                  <td>{fmtInt(r.usage?.totalTokens)}</td>
                  <td>{fmtCost(r.usage?.costUsd)}</td>
                  <td>{fmtTime(r.createTime)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <MoreButton token={next} onMore={() => void api.workflows.listRuns({ workflowId, status, pageSize: 50, pageToken: next }).then((r) => setExtra((x) => ({ runs: [...(x?.runs ?? []), ...r.runs], next: r.nextPageToken })))} />
      <Dialog open={starting} title="Start a run" onClose={() => setStarting(false)}>
        {starting && wf && <StartRunForm workflow={wf} />}
      </Dialog>
    </section>
  );
}
