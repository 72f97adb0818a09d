// Small React hooks over the API: one-shot loads with reload, and a resumable stream's state.
import { useCallback, useEffect, useRef, useState } from "react";
import { runResumable, type ResumableOptions, type Sequenced, type StreamState } from "./stream";

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs load when deps change (and on reload()); keeps the last data while reloading. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: readonly unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({ data: undefined, error: undefined, loading: true });
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    loadRef.current(ctl.signal).then(
      (data) => !ctl.signal.aborted && setState({ data, error: undefined, loading: false }),
      (error: unknown) => !ctl.signal.aborted && setState((s) => ({ data: s.data, error, loading: false })),
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** Runs a resumable stream while mounted (and enabled); returns its state. */
export function useResumable<E extends Sequenced>(opts: () => ResumableOptions<E> | null, deps: readonly unknown[]): StreamState | null {
  const [state, setState] = useState<StreamState | null>(null);
  const optsRef = useRef(opts);
  optsRef.current = opts;
  useEffect(() => {
    const o = optsRef.current();
    if (!o) return;
    const s = runResumable({ ...o, onState: (st) => (setState(st), o.onState?.(st)) });
    return () => s.stop();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}
