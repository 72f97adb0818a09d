// Shows whether a live stream is connected, reconnecting (and when), or ended.
import type { StreamState } from "../api/stream";
import { codeName } from "../api/errors";

export function StreamBadge({ state }: { state: StreamState | null }) {
  if (!state) return null;
  const text =
    state.phase === "live"
      ? "live"
      : state.phase === "connecting"
        ? "connecting…"
        : state.phase === "reconnecting"
          ? `reconnecting in ${Math.round((state.retryInMs ?? 0) / 100) / 10}s (${state.error ? codeName(state.error.code) : "dropped"})`
          : state.phase === "ended"
            ? "finished"
            : state.phase === "failed"
              ? `stopped: ${state.error ? `${codeName(state.error.code)} ${state.error.rawMessage}` : "error"}`
              : "stopped";
  return (
    <span className={`stream s-${state.phase}`} role="status" aria-live="polite" data-phase={state.phase} data-last-sequence={String(state.lastSequence)} data-reconnects={state.reconnects}>
      {text}
    </span>
  );
}
