// Small accessible building blocks shared by the screens.
import { Code, ConnectError } from "@connectrpc/connect";
import { useEffect, useId, useRef, type ReactNode } from "react";
import { codeName } from "../api/errors";
import { AgentStatus, RunStatus, TaskStatus } from "../gen/agentz/v1/common_pb";

export function Field(props: { label: string; error?: string | undefined; hint?: string; children: (ids: { id: string; describedBy: string | undefined; invalid: boolean }) => ReactNode }) {
  const id = useId();
  const errId = `${id}-err`;
  const hintId = `${id}-hint`;
  const describedBy = [props.error ? errId : null, props.hint ? hintId : null].filter(Boolean).join(" ") || undefined;
  return (
    <div className={`field${props.error ? " invalid" : ""}`}>
      <label htmlFor={id}>{props.label}</label>
      {props.children({ id, describedBy, invalid: !!props.error })}
      {props.hint && (
        <p className="hint" id={hintId}>
          {props.hint}
        </p>
      )}
      {props.error && (
        <p className="field-error" id={errId} role="alert">
          {props.error}
        </p>
      )}
    </div>
  );
}

/** A failed call, with the status name; PERMISSION_DENIED says what the role may not do. */
export function ErrorNote({ error, prefix }: { error: unknown; prefix?: string }) {
  if (!error) return null;
  const text =
    typeof error === "string"
      ? error
      : (() => {
          const ce = ConnectError.from(error);
          if (ce.code === Code.PermissionDenied) return `Not allowed: ${ce.rawMessage}`;
          return `${codeName(ce.code)}: ${ce.rawMessage}`;
        })();
  return (
    <div className="error-note" role="alert">
      {prefix ? `${prefix}: ` : ""}
      {text}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

const TASK_CLASS: Record<number, string> = {
  [TaskStatus.PENDING]: "pending",
  [TaskStatus.QUEUED]: "queued",
  [TaskStatus.RUNNING]: "running",
  [TaskStatus.BACKOFF]: "backoff",
  [TaskStatus.SUCCEEDED]: "succeeded",
  [TaskStatus.FAILED]: "failed",
  [TaskStatus.CANCELLED]: "cancelled",
};
const RUN_CLASS: Record<number, string> = {
  [RunStatus.PENDING]: "pending",
  [RunStatus.RUNNING]: "running",
  [RunStatus.SUCCEEDED]: "succeeded",
  [RunStatus.FAILED]: "failed",
  [RunStatus.CANCELLED]: "cancelled",
};
const AGENT_CLASS: Record<number, string> = {
  [AgentStatus.IDLE]: "idle",
  [AgentStatus.BUSY]: "running",
  [AgentStatus.DISABLED]: "cancelled",
  [AgentStatus.ERROR]: "failed",
};

export function taskClass(s: TaskStatus): string {
  return TASK_CLASS[s] ?? "pending";
}

export function StatusBadge({ kind, status }: { kind: "task" | "run" | "agent"; status: number }) {
  const cls = (kind === "task" ? TASK_CLASS : kind === "run" ? RUN_CLASS : AGENT_CLASS)[status] ?? "pending";
  const name = (kind === "task" ? TaskStatus[status] : kind === "run" ? RunStatus[status] : AgentStatus[status]) ?? "UNSPECIFIED";
  const label = kind === "agent" && status === AgentStatus.BUSY ? "busy" : name.toLowerCase();
  return <span className={`badge s-${cls}`}>{label}</span>;
}

export function ProgressBar({ value, label }: { value: number; label: string }) {
  const pct = Math.round(Math.max(0, Math.min(1, value)) * 100);
  return (
    <div className="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
      <div className="progress-fill" style={{ width: `${pct}%` }} />
    </div>
  );
}

/** A modal dialog (the native <dialog>: focus is trapped and Escape closes it). */
export function Dialog(props: { open: boolean; title: string; onClose: () => void; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} aria-label={props.title} onClose={props.onClose} className="dialog">
      {props.open && (
        <>
          <header className="dialog-head">
            <h2>{props.title}</h2>
            <button type="button" className="ghost" onClick={props.onClose} aria-label="Close">
              ×
            </button>
          </header>
          {props.children}
        </>
      )}
    </dialog>
  );
}

export function Stat({ label, value, hint }: { label: string; value: ReactNode; hint?: string }) {
  return (
    <div className="stat" title={hint}>
      <div className="stat-value">{value}</div>
      <div className="stat-label">{label}</div>
    </div>
  );
}

export function PageHead({ title, children }: { title: string; children?: ReactNode }) {
  useEffect(() => {
    document.title = `${title} · AGENTZ`;
  }, [title]);
  return (
    <div className="page-head">
      <h1 tabIndex={-1} id="page-title">
        {title}
      </h1>
      <div className="actions">{children}</div>
    </div>
  );
}

/** "Load more" for paged List calls. */
export function MoreButton({ token, onMore, busy }: { token: string; onMore: () => void; busy?: boolean }) {
  if (!token) return null;
  return (
    <button type="button" onClick={onMore} disabled={busy} className="more">
      {busy ? "Loading…" : "Load more"}
    </button>
  );
}
