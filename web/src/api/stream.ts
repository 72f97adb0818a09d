// Resumable server streams (WatchRun, WatchTask, WatchAgents, StreamMetrics).
//
// Durable events carry sequence > 0, strictly increasing within the stream's scope; ephemeral
// ones carry 0. A dropped stream is reopened with after_sequence = the last durable sequence
// seen, and the server replays every later durable event exactly once; the Deduper also drops
// any sequence already delivered, so a replay that overlaps (or a server that resends) never
// shows a line twice. Streams ending RESOURCE_EXHAUSTED (too slow) or UNAVAILABLE (restart),
// and network failures, are reopened with exponential backoff; errors a retry cannot fix
// (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT, …) end the stream.
import { Code, ConnectError } from "@connectrpc/connect";

export interface Sequenced {
  sequence: bigint;
}

/** Drops durable events at or below the last sequence delivered; lets ephemeral ones through. */
export class Deduper {
  last: bigint;
  constructor(after: bigint = 0n) {
    this.last = after;
  }
  accept(e: Sequenced): boolean {
    if (e.sequence === 0n) return true;
    if (e.sequence <= this.last) return false;
    this.last = e.sequence;
    return true;
  }
}

/** The N of "… resume with after_sequence = N" in a stream's final status message. */
export function resumeSequenceFromMessage(message: string): bigint | null {
  const m = /resume with after_sequence = (\d+)/.exec(message);
  return m ? BigInt(m[1]!) : null;
}

/** Whether a stream that ended with this code should be reopened. */
export function isReconnectable(code: Code): boolean {
  switch (code) {
    case Code.Unavailable:
    case Code.ResourceExhausted:
    case Code.Unknown: // network failures, a proxy cutting the response
    case Code.Internal: // a truncated grpc-web body
    case Code.DeadlineExceeded:
    case Code.Aborted:
    // The browser reports a connection cut under a stream as cancelled; a stop() of our own
    // is recognised before this is asked.
    case Code.Canceled:
      return true;
    default:
      return false;
  }
}

/** Backoff before reconnect attempt n (1-based): 250 ms doubling to 10 s, ±20 % jitter. */
export function backoffDelay(attempt: number, rand: () => number = Math.random): number {
  const base = Math.min(10_000, 250 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.8 + 0.4 * rand()));
}

export type StreamPhase = "connecting" | "live" | "reconnecting" | "ended" | "failed" | "stopped";

export interface StreamState {
  phase: StreamPhase;
  /** Reconnect attempts since the last event arrived. */
  attempt: number;
  /** The last durable sequence delivered. */
  lastSequence: bigint;
  /** Why the stream is reconnecting or failed. */
  error?: ConnectError;
  /** Milliseconds until the next attempt, while reconnecting. */
  retryInMs?: number;
  /** Times the stream was reopened. */
  reconnects: number;
}

export interface ResumableOptions<E extends Sequenced> {
  /**
   * Opens the stream from after (exclusive). Call opened when the server has accepted it (its
   * response headers, e.g. as the call's onHeader): a quiet stream is live before its first event.
   */
  open: (after: bigint, signal: AbortSignal, opened: () => void) => AsyncIterable<E>;
  /** Called for every event that is not a duplicate, in order. */
  onEvent: (e: E) => void;
  onState?: (s: StreamState) => void;
  /** Called after a reopened stream delivered its first event or was opened again. */
  onReconnected?: () => void;
  /** The last durable sequence already known (0 = from the start). */
  after?: bigint;
  /**
   * true for WatchRun/WatchTask, which end OK after the terminal status; false for WatchAgents
   * and StreamMetrics, which run until cancelled (an OK end means the server closed it: reopen).
   */
  endsWhenDone: boolean;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  delay?: (attempt: number) => number;
  /** Give up after this many consecutive failed attempts; default: never. */
  maxAttempts?: number;
}

export interface ResumableStream {
  stop(): void;
  /** Settles when the stream ended, failed or was stopped. */
  done: Promise<StreamState>;
  readonly state: StreamState;
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

export function runResumable<E extends Sequenced>(o: ResumableOptions<E>): ResumableStream {
  const ctl = new AbortController();
  const dedupe = new Deduper(o.after ?? 0n);
  const sleep = o.sleep ?? defaultSleep;
  const delay = o.delay ?? ((n: number) => backoffDelay(n));
  let state: StreamState = { phase: "connecting", attempt: 0, lastSequence: dedupe.last, reconnects: 0 };
  const set = (s: Partial<StreamState>) => {
    state = { ...state, ...s, lastSequence: dedupe.last };
    o.onState?.(state);
  };

  const loop = async (): Promise<StreamState> => {
    set({});
    for (;;) {
      let gotEvent = false;
      try {
        const opened = () => {
          if (!ctl.signal.aborted && state.phase === "connecting") set({ phase: "live", error: undefined, retryInMs: undefined });
        };
        const it = o.open(dedupe.last, ctl.signal, opened);
        if (state.reconnects > 0) o.onReconnected?.();
        for await (const e of it) {
          if (ctl.signal.aborted) break;
          if (!gotEvent) {
            gotEvent = true;
            set({ phase: "live", attempt: 0, error: undefined, retryInMs: undefined });
          }
          if (dedupe.accept(e)) {
            o.onEvent(e);
            if (e.sequence !== 0n) state = { ...state, lastSequence: dedupe.last };
          }
        }
        if (ctl.signal.aborted) {
          set({ phase: "stopped" });
          return state;
        }
        if (o.endsWhenDone) {
          set({ phase: "ended", error: undefined });
          return state;
        }
        // A stream that should run until cancelled was closed by the server: reopen it.
        throw new ConnectError("stream closed by the server", Code.Unavailable);
      } catch (err) {
        if (ctl.signal.aborted) {
          set({ phase: "stopped" });
          return state;
        }
        const ce = ConnectError.from(err);
        const attempt = gotEvent ? 1 : state.attempt + 1;
        if (!isReconnectable(ce.code) || (o.maxAttempts !== undefined && attempt > o.maxAttempts)) {
          set({ phase: "failed", error: ce, attempt });
          return state;
        }
        const wait = delay(attempt);
        set({ phase: "reconnecting", error: ce, attempt, retryInMs: wait });
        await sleep(wait, ctl.signal);
        if (ctl.signal.aborted) {
          set({ phase: "stopped" });
          return state;
        }
        state = { ...state, reconnects: state.reconnects + 1 };
        set({ phase: "connecting" });
      }
    }
  };

  const done = loop();
  return {
    stop: () => ctl.abort(),
    done,
    get state() {
      return state;
    },
  };
}
