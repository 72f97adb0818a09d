// Tasks: standalone and workflow tasks with their status, and creating one (agent, dependencies,
// retry policy, timeout).
import { create } from "@bufbuild/protobuf";
import { useState, type FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { api, requestId } from "../api/client";
import { formErrors, noErrors, type FormErrors } from "../api/errors";
import { useLoad } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { TaskStatus } from "../gen/agentz/v1/common_pb";
import { TaskSchema, type Task } from "../gen/agentz/v1/task_pb";
import { fmtCost, fmtInt, fmtTime, parseDuration } from "../lib/format";
import { Dialog, Empty, ErrorNote, Field, Loading, MoreButton, PageHead, ProgressBar, StatusBadge } from "../components/ui";

export default function Tasks() {
  const auth = useAuth();
  const [params, setParams] = useSearchParams();
  const agentId = params.get("agent") ?? "";
  const status = Number(params.get("status") ?? 0) as TaskStatus;
  const [extra, setExtra] = useState<{ tasks: Task[]; next: string } | null>(null);
  const [creating, setCreating] = useState(false);
  const nav = useNavigate();
  const list = useLoad(async () => {
    setExtra(null);
    return api.tasks.listTasks({ pageSize: 50, agentId, status });
  }, [agentId, status]);
  const agents = useLoad(async () => (await api.agents.listAgents({ pageSize: 1000 })).agents, []);
  const names = new Map((agents.data ?? []).map((a) => [a.id, a.name || a.role]));
  const tasks = [...(list.data?.tasks ?? []), ...(extra?.tasks ?? [])];
  const next = extra ? extra.next : (list.data?.nextPageToken ?? "");
  const setParam = (k: string, v: string) => {
    const p = new URLSearchParams(params);
    if (v && v !== "0") p.set(k, v);
    else p.delete(k);
    setParams(p);
  };
  return (
    <section>
      <PageHead title="Tasks">
        {auth.can("write") && (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            New task
          </button>
        )}
      </PageHead>
      <div className="toolbar">
        <label htmlFor="t-status">Status</label>
        <select id="t-status" value={status} onChange={(e) => setParam("status", e.target.value)}>
          {Object.entries(TaskStatus)
            .filter(([, v]) => typeof v === "number")
            .map(([k, v]) => (
              <option key={k} value={v}>
                {v === 0 ? "any" : k.toLowerCase()}
              </option>
            ))}
        </select>
        <label htmlFor="t-agent">Agent</label>
        <select id="t-agent" value={agentId} onChange={(e) => setParam("agent", e.target.value)}>
          <option value="">any</option>
          {(agents.data ?? []).map((a) => (
            <option key={a.id} value={a.id}>
              {a.name || a.role}
            </option>
          ))}
        </select>
      </div>
      <ErrorNote error={list.error} />
      {list.loading && !list.data ? (
        <Loading what="tasks" />
      ) : tasks.length === 0 ? (
        <Empty>No tasks match.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Tasks</caption>
            <thead>
              <tr>
                <th scope="col">Task</th>
                <th scope="col">Agent</th>
                <th scope="col">Status</th>
                <th scope="col">Attempt</th>
                <th scope="col">Progress</th>
                <th scope="col">Tokens</th>
                <th scope="col">Cost</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {tasks.map((t) => (
                <tr key={t.id}>
                  <td>
                    <Link to={`/tasks/${t.id}`}>{t.stepId ? `${t.stepId} (run ${t.runId.slice(0, 8)})` : t.description.slice(0, 60) || t.id}</Link>
                  </td>
                  <td>{names.get(t.agentId) ?? t.agentId.slice(0, 8)}</td>
                  <td>
                    <StatusBadge kind="task" status={t.status} />
                  </td>
                  <td>{t.attempt}</td>
                  <td>
                    <ProgressBar value={t.status === TaskStatus.SUCCEEDED ? 1 : t.progress} label={`progress of task ${t.id}`} />
                  </td>
                  <td>{fmtInt(t.usage?.totalTokens)}</td>
                  <td>{fmtCost(t.usage?.costUsd)}</td>
                  <td>{fmtTime(t.createTime)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <MoreButton
        token={next}
        onMore={() => void api.tasks.listTasks({ pageSize: 50, agentId, status, pageToken: next }).then((r) => setExtra((x) => ({ tasks: [...(x?.tasks ?? []), ...r.tasks], next: r.nextPageToken })))}
      />
      <Dialog open={creating} title="New task" onClose={() => setCreating(false)}>
        <TaskForm agents={agents.data ?? []} recent={list.data?.tasks ?? []} onCreated={(t) => nav(`/tasks/${t.id}`)} />
      </Dialog>
    </section>
  );
}

const KNOWN = ["description", "expected_output", "agent_id", "depends_on", "context", "retry_policy", "retry_policy.initial_backoff", "retry_policy.backoff_coefficient", "retry_policy.maximum_backoff", "retry_policy.max_attempts", "retry_policy.non_retryable_errors", "timeout", "output_schema"];

function TaskForm({ agents, recent, onCreated }: { agents: { id: string; name: string; role: string }[]; recent: Task[]; onCreated: (t: Task) => void }) {
  const [f, setF] = useState({ description: "", expectedOutput: "", agentId: "", dependsOn: [] as string[], context: "", initialBackoff: "", coefficient: "", maxBackoff: "", maxAttempts: "", nonRetryable: "", timeout: "", outputSchema: "" });
  const [errors, setErrors] = useState<FormErrors>(noErrors);
  const [busy, setBusy] = useState(false);
  const [rid] = useState(requestId);
  const set = (k: keyof typeof f, v: string | string[]) => setF((x) => ({ ...x, [k]: v }));
  const err = (k: string) => errors.fields[k];
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const local: Record<string, string> = {};
    const dur = (v: string, k: string) => {
      if (!v.trim()) return undefined;
      const d = parseDuration(v);
      if (!d) local[k] = `${k}: "${v}" is not a duration (e.g. 2s, 1m)`;
      return d ?? undefined;
    };
    let schema: Record<string, unknown> | undefined;
    if (f.outputSchema.trim()) {
      try {
        schema = JSON.parse(f.outputSchema) as Record<string, unknown>;
      } catch (x) {
        local.output_schema = `output_schema: not JSON (${(x as Error).message})`;
      }
    }
    const retrySet = f.initialBackoff || f.coefficient || f.maxBackoff || f.maxAttempts || f.nonRetryable;
    const task = create(TaskSchema, {
      description: f.description,
      expectedOutput: f.expectedOutput,
      agentId: f.agentId,
      dependsOn: f.dependsOn,
      context: f.context.split("\n").map((s) => s.trim()).filter(Boolean),
      timeout: dur(f.timeout, "timeout"),
      retryPolicy: retrySet
        ? {
            initialBackoff: dur(f.initialBackoff, "retry_policy.initial_backoff"),
            backoffCoefficient: f.coefficient ? Number(f.coefficient) : 0,
            maximumBackoff: dur(f.maxBackoff, "retry_policy.maximum_backoff"),
            maxAttempts: f.maxAttempts ? Number(f.maxAttempts) : 0,
            nonRetryableErrors: f.nonRetryable.split(",").map((s) => s.trim()).filter(Boolean),
          }
        : undefined,
      outputSchema: schema as never,
    });
    if (Object.keys(local).length) return setErrors({ fields: local, form: null, code: null });
    setBusy(true);
    setErrors(noErrors);
    try {
      onCreated(await api.tasks.createTask({ task, requestId: rid }));
    } catch (x) {
      setErrors(formErrors(x, "task", KNOWN));
    } finally {
      setBusy(false);
    }
  };
  const input = (k: keyof typeof f, label: string, field: string, hint?: string) => (
    <Field label={label} error={err(field)} hint={hint}>
      {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={f[k] as string} onChange={(e) => set(k, e.target.value)} />}
    </Field>
  );
  return (
    <form className="form" onSubmit={(e) => void submit(e)} noValidate>
      {errors.form && (
        <div className="error-note" role="alert">
          {errors.form}
        </div>
      )}
      <Field label="Description" error={err("description")}>
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} rows={3} value={f.description} onChange={(e) => set("description", e.target.value)} />}
      </Field>
      <Field label="Expected output" error={err("expected_output")}>
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} rows={2} value={f.expectedOutput} onChange={(e) => set("expectedOutput", e.target.value)} />}
      </Field>
      <Field label="Agent" error={err("agent_id")}>
        {(p) => (
          <select id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={f.agentId} onChange={(e) => set("agentId", e.target.value)}>
            <option value="">choose an agent</option>
            {agents.map((a) => (
              <option key={a.id} value={a.id}>
                {a.name || a.role}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Depends on" error={err("depends_on")} hint="Tasks that must succeed first; their outputs become this task's context.">
        {(p) => (
          <select id={p.id} aria-describedby={p.describedBy} multiple size={Math.min(6, Math.max(2, recent.length))} value={f.dependsOn} onChange={(e) => set("dependsOn", [...e.target.selectedOptions].map((o) => o.value))}>
            {recent.map((t) => (
              <option key={t.id} value={t.id}>
                {(t.stepId || t.description).slice(0, 50)} · {t.id.slice(0, 8)}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Extra context" error={err("context")} hint="One per line.">
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} rows={2} value={f.context} onChange={(e) => set("context", e.target.value)} />}
      </Field>
      <fieldset>
        <legend>Retry policy</legend>
        {err("retry_policy") && (
          <p className="field-error" role="alert">
            {err("retry_policy")}
          </p>
        )}
        <div className="grid2">
          {input("initialBackoff", "Initial backoff", "retry_policy.initial_backoff", "Empty = 1s.")}
          {input("coefficient", "Backoff coefficient", "retry_policy.backoff_coefficient", "≥ 1; empty = 2.")}
          {input("maxBackoff", "Maximum backoff", "retry_policy.maximum_backoff", "Empty = 100 × initial.")}
          {input("maxAttempts", "Max attempts", "retry_policy.max_attempts", "Including the first; empty = unlimited, 1 = no retries.")}
        </div>
        {input("nonRetryable", "Never retry these errors", "retry_policy.non_retryable_errors", "Comma-separated TaskError types, e.g. output_schema_mismatch.")}
      </fieldset>
      {input("timeout", "Timeout per attempt", "timeout", "Empty = 10 minutes.")}
      <Field label="Output schema (JSON Schema)" error={err("output_schema")}>
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} rows={3} value={f.outputSchema} onChange={(e) => set("outputSchema", e.target.value)} className="mono" />}
      </Field>
      <div className="actions">
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Creating…" : "Create task"}
        </button>
      </div>
    </form>
  );
}
