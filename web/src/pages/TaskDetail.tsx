// One task: live status and tokens while it runs (WatchTask), attempts with their errors and the
// backoff between them, output, token usage and cost; cancel and retry.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { useCallback, useEffect, useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api/client";
import { useLoad, useResumable } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { TaskStatus } from "../gen/agentz/v1/common_pb";
import type { Event } from "../gen/agentz/v1/event_pb";
import { fmtCost, fmtDuration, fmtInt, fmtMs, fmtTime } from "../lib/format";
import { isTerminalTask, lineOf, type EventLine } from "../api/runState";
import { ErrorNote, Loading, PageHead, ProgressBar, Stat, StatusBadge } from "../components/ui";
import { StreamBadge } from "../components/StreamBadge";

export default function TaskDetail() {
  const { id = "" } = useParams();
  const auth = useAuth();
  const task = useLoad(() => api.tasks.getTask({ id }), [id]);
  const attempts = useLoad(async () => (await api.tasks.listTaskAttempts({ taskId: id, pageSize: 1000 })).attempts, [id]);
  const [tokens, setTokens] = useState<{ attempt: number; text: string }>({ attempt: 0, text: "" });
  const [lines, setLines] = useState<EventLine[]>([]);
  const [progress, setProgress] = useState<{ fraction: number; message: string } | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [now, setNow] = useState(Date.now());
  const reloadAll = useCallback(() => {
    task.reload();
    attempts.reload();
  }, [task, attempts]);
  const onEvent = useCallback(
    (e: Event) => {
      const p = e.payload;
      if (p.case === "token") setTokens((t) => (p.value.attempt > t.attempt ? { attempt: p.value.attempt, text: p.value.text } : p.value.attempt < t.attempt ? t : { attempt: t.attempt, text: t.text + p.value.text }));
      if (p.case === "progress") setProgress({ fraction: p.value.fraction, message: p.value.message });
      if (p.case === "taskStatus") reloadAll();
      const l = lineOf(e, Date.now());
      if (l) setLines((ls) => (ls.some((x) => x.key === l.key) ? ls : [...ls, l]));
    },
    [reloadAll],
  );
  const stream = useResumable<Event>(() => ({ open: (after, signal, opened) => api.tasks.watchTask({ taskId: id, afterSequence: after, includeTokens: true }, { signal, onHeader: opened }), onEvent, endsWhenDone: true }), [id]);
  const t = task.data;
  useEffect(() => {
    if (t?.status !== TaskStatus.BACKOFF) return;
    const i = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(i);
  }, [t?.status]);
  if (task.loading && !t) return <Loading what="the task" />;
  if (!t) return <ErrorNote error={task.error} />;
  const act = async (f: () => Promise<unknown>) => {
    setActionError(null);
    try {
      await f();
      reloadAll();
    } catch (e) {
      setActionError(e);
    }
  };
  const canWrite = auth.can("write");
  const list = attempts.data ?? [];
  return (
    <section>
      <PageHead title={t.stepId ? `Step ${t.stepId}` : "Task"}>
        <StreamBadge state={stream} />
        <StatusBadge kind="task" status={t.status} />
        {canWrite && !isTerminalTask(t.status) && (
          <button type="button" className="danger" onClick={() => void act(() => api.tasks.cancelTask({ id, reason: "cancelled in the web UI" }))}>
            Cancel
          </button>
        )}
        {canWrite && (t.status === TaskStatus.FAILED || t.status === TaskStatus.CANCELLED) && (
          <button type="button" onClick={() => void act(() => api.tasks.retryTask({ id }))}>
            Retry
          </button>
        )}
      </PageHead>
      <ErrorNote error={actionError} />
      <dl className="kv">
        <dt>Description</dt>
        <dd className="pre">{t.description}</dd>
        <dt>Expected output</dt>
        <dd className="pre">{t.expectedOutput}</dd>
        <dt>Agent</dt>
        <dd>
          <Link to={`/agents/${t.agentId}`}>{t.agentId}</Link>
        </dd>
        {t.runId && (
          <>
            <dt>Run</dt>
            <dd>
              <Link to={`/runs/${t.runId}`}>{t.runId}</Link> (step {t.stepId})
            </dd>
          </>
        )}
        <dt>Depends on</dt>
        <dd>
          {t.dependsOn.length
            ? t.dependsOn.map((d) => (
                <Link key={d} to={`/tasks/${d}`} className="chip">
                  {d.slice(0, 8)}
                </Link>
              ))
            : "nothing"}
        </dd>
        <dt>Retry policy</dt>
        <dd>
          {t.retryPolicy
            ? `initial ${fmtDuration(t.retryPolicy.initialBackoff)}, ×${t.retryPolicy.backoffCoefficient || 2}, max ${fmtDuration(t.retryPolicy.maximumBackoff)}, ${t.retryPolicy.maxAttempts || "unlimited"} attempts${t.retryPolicy.nonRetryableErrors.length ? `, never: ${t.retryPolicy.nonRetryableErrors.join(", ")}` : ""}`
            : "defaults (1s, ×2, unlimited attempts)"}
        </dd>
        <dt>Created · started · ended</dt>
        <dd>
          {fmtTime(t.createTime)} · {fmtTime(t.startTime)} · {fmtTime(t.endTime)}
        </dd>
      </dl>
      <div className="stats">
        <Stat label="attempt" value={t.attempt} />
        <Stat label="prompt tokens" value={fmtInt(t.usage?.promptTokens)} />
        <Stat label="completion tokens" value={fmtInt(t.usage?.completionTokens)} />
        <Stat label="total tokens" value={fmtInt(t.usage?.totalTokens)} />
        <Stat label="cost" value={fmtCost(t.usage?.costUsd)} />
      </div>
      {!isTerminalTask(t.status) && (
        <div>
          <ProgressBar value={progress?.fraction ?? t.progress} label="task progress" />
          {progress?.message && <p className="muted small">{progress.message}</p>}
        </div>
      )}
      {t.status === TaskStatus.BACKOFF && t.nextAttemptTime && <p className="warn">Next attempt in {fmtMs(Math.max(0, timestampMs(t.nextAttemptTime) - now))}</p>}
      {t.error && (
        <div className="error-note" role="status">
          {t.error.type}: {t.error.message} {t.error.retryable ? "(retryable)" : "(not retryable)"}
        </div>
      )}
      <h2>Output</h2>
      {t.output ? (
        <pre className="output" data-testid="task-output">{t.output.json ? JSON.stringify(t.output.json, null, 2) : t.output.raw}</pre>
      ) : tokens.text ? (
        <pre className="output live" aria-live="off" data-testid="task-tokens">
          {tokens.text}
        </pre>
      ) : (
        <p className="muted">{isTerminalTask(t.status) ? "No output." : "Waiting for the model…"}</p>
      )}
      <h2>Attempts</h2>
      <ErrorNote error={attempts.error} />
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Status</th>
              <th scope="col">Started</th>
              <th scope="col">Took</th>
              <th scope="col">Backoff before</th>
              <th scope="col">Error</th>
              <th scope="col">Tokens</th>
              <th scope="col">Cost</th>
              <th scope="col">Worker</th>
            </tr>
          </thead>
          <tbody>
            {list.map((a, i) => {
              const prev = i > 0 ? list[i - 1] : undefined;
              const wait = prev?.endTime && a.startTime ? timestampMs(a.startTime) - timestampMs(prev.endTime) : null;
              const took = a.startTime && a.endTime ? timestampMs(a.endTime) - timestampMs(a.startTime) : null;
              return (
                <tr key={a.attempt}>
                  <td>{a.attempt}</td>
                  <td>
                    <StatusBadge kind="task" status={a.status} />
                  </td>
                  <td>{fmtTime(a.startTime)}</td>
                  <td>{fmtMs(took)}</td>
                  <td>{fmtMs(wait)}</td>
                  <td>{a.error ? `${a.error.type}: ${a.error.message}` : "—"}</td>
                  <td>{fmtInt(a.usage?.totalTokens)}</td>
                  <td>{fmtCost(a.usage?.costUsd)}</td>
                  <td>{a.worker}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <h2>Events</h2>
      <ol className="events">
        {lines.map((l) => (
          <li key={l.key} className={`lvl-${l.level}`}>
            <span className="muted small">{l.sequence ? `#${l.sequence}` : "live"}</span> {l.text}
          </li>
        ))}
      </ol>
    </section>
  );
}
