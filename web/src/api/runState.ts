// The state of a run as the live run view shows it: a GetRun snapshot, then WatchRun events
// applied in order. Pure: applyRunEvent returns a new model, so it is unit tested and the view
// can batch many events into one render.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { RunStatus, TaskStatus } from "../gen/agentz/v1/common_pb";
import type { Event } from "../gen/agentz/v1/event_pb";
import { LogLevel } from "../gen/agentz/v1/event_pb";
import type { WorkflowRun } from "../gen/agentz/v1/workflow_pb";

export interface StepState {
  stepId: string;
  taskId: string;
  status: TaskStatus;
  attempt: number;
  /** 0..1 of the current attempt. */
  progress: number;
  progressMessage: string;
  error: { type: string; message: string } | null;
  startMs: number | null;
  endMs: number | null;
  /** Text streamed by the model in the current attempt (token deltas). */
  tokens: string;
  tokensAttempt: number;
  output: string | null;
}

export interface RunModel {
  runId: string;
  status: RunStatus;
  order: string[];
  steps: Record<string, StepState>;
  completedSteps: number;
  totalSteps: number;
  error: { type: string; message: string } | null;
  createMs: number | null;
  startMs: number | null;
  endMs: number | null;
  /** The highest durable sequence applied. */
  lastSequence: bigint;
  /** The server time of the last event of any kind (heartbeats included). */
  lastEventMs: number | null;
}

export type LineKind = "run" | "task" | "progress" | "tool" | "result" | "log";

/** One row of the run's event timeline (durable events, tool calls and results, logs). */
export interface EventLine {
  /** Unique and stable: "d<sequence>" for durable events, "e<n>" for ephemeral ones. */
  key: string;
  sequence: bigint;
  timeMs: number | null;
  stepId: string;
  kind: LineKind;
  level: "debug" | "info" | "warn" | "error";
  text: string;
}

const TERMINAL_TASK = new Set([TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED]);
const TERMINAL_RUN = new Set([RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED]);

export const isTerminalTask = (s: TaskStatus) => TERMINAL_TASK.has(s);
export const isTerminalRun = (s: RunStatus) => TERMINAL_RUN.has(s);

export function taskStatusName(s: TaskStatus): string {
  return (TaskStatus[s] ?? "UNSPECIFIED").toLowerCase();
}
export function runStatusName(s: RunStatus): string {
  return (RunStatus[s] ?? "UNSPECIFIED").toLowerCase();
}

const ms = (t: Parameters<typeof timestampMs>[0] | undefined) => (t ? timestampMs(t) : null);

function emptyStep(stepId: string): StepState {
  return {
    stepId,
    taskId: "",
    status: TaskStatus.PENDING,
    attempt: 0,
    progress: 0,
    progressMessage: "",
    error: null,
    startMs: null,
    endMs: null,
    tokens: "",
    tokensAttempt: 0,
    output: null,
  };
}

/** The model of a run from GetRun, before any event. */
export function runFromSnapshot(run: WorkflowRun): RunModel {
  const steps: Record<string, StepState> = {};
  const order: string[] = [];
  for (const s of run.steps) {
    order.push(s.stepId);
    steps[s.stepId] = {
      ...emptyStep(s.stepId),
      taskId: s.taskId,
      status: s.status === TaskStatus.UNSPECIFIED ? TaskStatus.PENDING : s.status,
      attempt: s.attempt,
      progress: s.status === TaskStatus.SUCCEEDED ? 1 : 0,
      error: s.error ? { type: s.error.type, message: s.error.message } : null,
      startMs: ms(s.startTime),
      endMs: ms(s.endTime),
      output: s.output ? s.output.raw : null,
    };
  }
  const completed = run.steps.filter((s) => isTerminalTask(s.status)).length;
  return {
    runId: run.id,
    status: run.status,
    order,
    steps,
    completedSteps: completed,
    totalSteps: run.steps.length,
    error: run.error ? { type: run.error.type, message: run.error.message } : null,
    createMs: ms(run.createTime),
    startMs: ms(run.startTime),
    endMs: ms(run.endTime),
    lastSequence: 0n,
    lastEventMs: null,
  };
}

/** The step an event is about: its step_id, else the step whose task it names. */
function stepOf(m: RunModel, e: Event): string | null {
  if (e.stepId && m.steps[e.stepId]) return e.stepId;
  if (e.taskId) for (const id of m.order) if (m.steps[id]!.taskId === e.taskId) return id;
  return null;
}

function withStep(m: RunModel, id: string, f: (s: StepState) => StepState): RunModel {
  const cur = m.steps[id] ?? emptyStep(id);
  const order = m.steps[id] ? m.order : [...m.order, id];
  return { ...m, order, steps: { ...m.steps, [id]: f(cur) } };
}

/**
 * Applies one event. Durable events at or below lastSequence are ignored (a resumed stream never
 * applies a change twice). A step or run in a terminal state only moves on when the event starts
 * from that state or belongs to a later attempt (ResumeRun, RetryTask), so replaying history over
 * a newer snapshot never moves finished steps back.
 */
export function applyRunEvent(m: RunModel, e: Event): RunModel {
  if (e.sequence !== 0n && e.sequence <= m.lastSequence) return m;
  const timeMs = ms(e.time);
  let next: RunModel = {
    ...m,
    lastSequence: e.sequence > m.lastSequence ? e.sequence : m.lastSequence,
    lastEventMs: timeMs ?? m.lastEventMs,
  };
  const p = e.payload;
  switch (p.case) {
    case "runStatus": {
      const v = p.value;
      if (isTerminalRun(next.status) && v.from !== next.status && v.to !== next.status) break;
      next = {
        ...next,
        status: v.to,
        error: v.to === RunStatus.FAILED && v.error ? { type: v.error.type, message: v.error.message } : next.error,
        startMs: v.to === RunStatus.RUNNING && next.startMs === null ? timeMs : next.startMs,
        endMs: isTerminalRun(v.to) ? (timeMs ?? next.endMs) : null,
      };
      if (v.to === RunStatus.RUNNING && v.from !== RunStatus.PENDING) next = { ...next, error: null };
      break;
    }
    case "taskStatus": {
      const v = p.value;
      const id = stepOf(next, e);
      if (!id) break;
      next = withStep(next, id, (s) => {
        const later = v.attempt > s.attempt;
        if (isTerminalTask(s.status) && !later && v.from !== s.status && v.to !== s.status) return s;
        if (v.attempt < s.attempt) return s;
        const failed = v.to === TaskStatus.BACKOFF || v.to === TaskStatus.FAILED;
        const restarted = later || (isTerminalTask(s.status) && !isTerminalTask(v.to));
        return {
          ...s,
          taskId: e.taskId || s.taskId,
          status: v.to,
          attempt: Math.max(s.attempt, v.attempt),
          error: failed && v.error ? { type: v.error.type, message: v.error.message } : v.to === TaskStatus.SUCCEEDED ? null : s.error,
          startMs: v.to === TaskStatus.RUNNING && (s.startMs === null || restarted) ? timeMs : s.startMs,
          endMs: isTerminalTask(v.to) ? timeMs : restarted ? null : s.endMs,
          progress: v.to === TaskStatus.SUCCEEDED ? 1 : restarted ? 0 : s.progress,
          tokens: later ? "" : s.tokens,
          tokensAttempt: later ? v.attempt : s.tokensAttempt,
        };
      });
      next = { ...next, completedSteps: next.order.filter((id) => isTerminalTask(next.steps[id]!.status)).length };
      break;
    }
    case "progress": {
      const v = p.value;
      const id = e.taskId || e.stepId ? stepOf(next, e) : null;
      if (id) {
        next = withStep(next, id, (s) => ({ ...s, progress: Math.min(1, Math.max(0, v.fraction)), progressMessage: v.message }));
      } else if (v.totalSteps > 0) {
        next = { ...next, completedSteps: v.completedSteps, totalSteps: v.totalSteps };
      }
      break;
    }
    case "token": {
      const v = p.value;
      const id = stepOf(next, e);
      if (!id) break;
      next = withStep(next, id, (s) =>
        v.attempt > s.tokensAttempt
          ? { ...s, tokens: v.text, tokensAttempt: v.attempt }
          : v.attempt < s.tokensAttempt
            ? s
            : { ...s, tokens: s.tokens + v.text },
      );
      break;
    }
    default:
      break;
  }
  return next;
}

export function applyRunEvents(m: RunModel, events: readonly Event[]): RunModel {
  let r = m;
  for (const e of events) r = applyRunEvent(r, e);
  return r;
}

const LEVEL: Record<number, EventLine["level"]> = {
  [LogLevel.DEBUG]: "debug",
  [LogLevel.INFO]: "info",
  [LogLevel.WARN]: "warn",
  [LogLevel.ERROR]: "error",
};

/**
 * The timeline line of an event, or null for events that are not lines (token deltas,
 * heartbeats, metrics). ephemeralIndex numbers ephemeral lines for their keys.
 */
export function lineOf(e: Event, ephemeralIndex: number): EventLine | null {
  const base = {
    key: e.sequence !== 0n ? `d${e.sequence}` : `e${ephemeralIndex}`,
    sequence: e.sequence,
    timeMs: ms(e.time),
    stepId: e.stepId,
  };
  const p = e.payload;
  switch (p.case) {
    case "runStatus": {
      const v = p.value;
      const err = v.error ? `: ${v.error.type} ${v.error.message}` : "";
      return { ...base, kind: "run", level: v.to === RunStatus.FAILED ? "error" : "info", text: `run ${runStatusName(v.from)} → ${runStatusName(v.to)}${err}` };
    }
    case "taskStatus": {
      const v = p.value;
      const err = v.error ? `: ${v.error.type} ${v.error.message}` : "";
      const level = v.to === TaskStatus.FAILED ? "error" : v.to === TaskStatus.BACKOFF ? "warn" : "info";
      return { ...base, kind: "task", level, text: `${e.stepId || e.taskId} ${taskStatusName(v.from)} → ${taskStatusName(v.to)} (attempt ${v.attempt})${err}` };
    }
    case "progress": {
      const v = p.value;
      const what = v.totalSteps > 0 && !e.taskId ? `${v.completedSteps}/${v.totalSteps} steps` : `${Math.round(v.fraction * 100)}%`;
      return { ...base, kind: "progress", level: "debug", text: `${what}${v.message ? ` ${v.message}` : ""}` };
    }
    case "toolCall":
      return { ...base, kind: "tool", level: "info", text: `tool ${p.value.tool}(${p.value.argumentsJson})` };
    case "toolResult":
      return { ...base, kind: "result", level: p.value.isError ? "error" : "info", text: `${p.value.isError ? "tool error" : "tool result"}: ${p.value.output}` };
    case "log":
      return { ...base, kind: "log", level: LEVEL[p.value.level] ?? "info", text: p.value.message };
    default:
      return null;
  }
}
