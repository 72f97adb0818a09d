// A store for live streams that may deliver thousands of events: events are queued as they
// arrive and folded into the state at most once per animation frame, so React renders once per
// frame however fast the stream is. The timeline keeps every line (keyed, never twice).
import { applyRunEvents, lineOf, type EventLine, type RunModel } from "./runState";
import type { Event } from "../gen/agentz/v1/event_pb";

export type Schedule = (flush: () => void) => void;

/** requestAnimationFrame when there is a document, else a macrotask (tests, background tabs). */
export const frameSchedule: Schedule = (f) => {
  if (typeof requestAnimationFrame === "function" && typeof document !== "undefined" && !document.hidden) {
    requestAnimationFrame(() => f());
  } else {
    setTimeout(f, 16);
  }
};

export interface RunSnapshot {
  model: RunModel;
  lines: readonly EventLine[];
  /** Bumped on every flush; components compare it to re-render. */
  version: number;
}

export class RunEventStore {
  private model: RunModel;
  private lines: EventLine[] = [];
  private keys = new Set<string>();
  private queue: Event[] = [];
  private scheduled = false;
  private ephemeral = 0;
  private listeners = new Set<() => void>();
  private snap: RunSnapshot;
  /** Events applied since the store was made (for the performance figure). */
  applied = 0;

  constructor(
    initial: RunModel,
    private readonly schedule: Schedule = frameSchedule,
    private readonly maxLines = 100_000,
  ) {
    this.model = initial;
    this.snap = { model: initial, lines: this.lines, version: 0 };
  }

  /** Replaces the model (a fresh GetRun), keeping the lines. */
  reset(model: RunModel): void {
    this.model = { ...model, lastSequence: this.model.lastSequence > model.lastSequence ? this.model.lastSequence : model.lastSequence };
    this.requestFlush();
  }

  push(e: Event): void {
    this.queue.push(e);
    this.requestFlush();
  }

  private requestFlush(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(() => this.flush());
  }

  /** Applies everything queued now (called by the scheduler; tests call it directly). */
  flush(): void {
    this.scheduled = false;
    const q = this.queue;
    this.queue = [];
    if (q.length) {
      this.model = applyRunEvents(this.model, q);
      for (const e of q) {
        const line = lineOf(e, this.ephemeral);
        if (!line) continue;
        if (e.sequence === 0n) this.ephemeral++;
        if (this.keys.has(line.key)) continue;
        this.keys.add(line.key);
        this.lines.push(line);
      }
      if (this.lines.length > this.maxLines) {
        const drop = this.lines.splice(0, this.lines.length - this.maxLines);
        for (const l of drop) this.keys.delete(l.key);
      }
      this.applied += q.length;
    }
    this.snap = { model: this.model, lines: this.lines, version: this.snap.version + 1 };
    for (const l of this.listeners) l();
  }

  subscribe = (l: () => void): (() => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };

  getSnapshot = (): RunSnapshot => this.snap;
}
