// Starting a run: the workflow's inputs (required ones marked, defaults filled in).
import { useState, type FormEvent } from "react";
import { useNavigate } from "react-router";
import { api, requestId } from "../api/client";
import { describeError } from "../api/errors";
import { parseFieldError } from "../api/fieldError";
import type { Workflow } from "../gen/agentz/v1/workflow_pb";
import { Field } from "./ui";

export function StartRunForm({ workflow }: { workflow: Workflow }) {
  const [values, setValues] = useState<Record<string, string>>(() => Object.fromEntries(workflow.inputs.map((i) => [i.name, i.defaultValue])));
  const [err, setErr] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [rid] = useState(requestId);
  const nav = useNavigate();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setErr(null);
    try {
      const inputs = Object.fromEntries(Object.entries(values).filter(([k, v]) => v !== "" || workflow.inputs.find((i) => i.name === k)?.required));
      const run = await api.workflows.startRun({ workflowId: workflow.id, version: workflow.version, inputs, requestId: rid });
      nav(`/runs/${run.id}`);
    } catch (x) {
      setErr(describeError(x));
    } finally {
      setBusy(false);
    }
  };
  const fieldErr = err ? parseFieldError(err.replace(/^[A-Z_]+: /, "")) : null;
  const missing = fieldErr?.path === "inputs" ? /"([^"]+)"/.exec(fieldErr.detail)?.[1] : undefined;
  return (
    <form className="form" onSubmit={(e) => void submit(e)} noValidate aria-label="Start a run">
      <p className="muted">
        {workflow.name} version {workflow.version}
      </p>
      {workflow.inputs.length === 0 && <p>This workflow takes no inputs.</p>}
      {workflow.inputs.map((i) => (
        <Field key={i.name} label={`${i.name}${i.required ? " (required)" : ""}`} hint={i.description || undefined} error={missing === i.name ? err! : undefined}>
          {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={values[i.name] ?? ""} onChange={(e) => setValues((v) => ({ ...v, [i.name]: e.target.value }))} />}
        </Field>
      ))}
      {err && !missing && (
        <div className="error-note" role="alert">
          {err}
        </div>
      )}
      <button type="submit" className="primary" disabled={busy}>
        {busy ? "Starting…" : "Start run"}
      </button>
    </form>
  );
}
