// Time-series line charts on uPlot, loaded on first use (its own chunk). Each chart also has its
// numbers as a table (for screen readers and for reading exact values).
import { useEffect, useRef, useState } from "react";
import type uPlot from "uplot";

export interface Series {
  label: string;
  values: (number | null)[];
  /** CSS colour variable name, e.g. "--c1". */
  color?: string;
}

export function LineChart(props: { title: string; x: number[]; series: Series[]; height?: number; format?: (v: number) => string; xIsTime?: boolean; yRange?: [number, number] }) {
  const ref = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  const height = props.height ?? 200;
  const fmt = props.format ?? ((v: number) => String(Math.round(v * 100) / 100));
  useEffect(() => {
    let cancelled = false;
    const el = ref.current;
    if (!el) return;
    Promise.all([import("uplot"), import("uplot/dist/uPlot.min.css")])
      .then(([{ default: UPlot }]) => {
        if (cancelled) return;
        const css = getComputedStyle(document.documentElement);
        const colors = ["--c1", "--c2", "--c3", "--c4"];
        const opts: uPlot.Options = {
          width: Math.max(240, el.clientWidth),
          height,
          scales: { x: { time: props.xIsTime ?? true }, ...(props.yRange ? { y: { range: props.yRange } } : {}) },
          axes: [
            { stroke: css.getPropertyValue("--muted"), grid: { stroke: css.getPropertyValue("--grid") } },
            { stroke: css.getPropertyValue("--muted"), grid: { stroke: css.getPropertyValue("--grid") }, values: (_u, vals) => vals.map((v) => fmt(v)) },
          ],
          series: [{}, ...props.series.map((s, i) => ({ label: s.label, stroke: css.getPropertyValue(s.color ?? colors[i % colors.length]!).trim() || "#888", width: 2, spanGaps: true }))],
        };
        const data = [props.x, ...props.series.map((s) => s.values)] as uPlot.AlignedData;
        plot.current?.destroy();
        plot.current = new UPlot(opts, data, el);
      })
      .catch((e: unknown) => setFailed(e instanceof Error ? e.message : String(e)));
    return () => {
      cancelled = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [props.x, props.series, height]);
  useEffect(() => {
    const el = ref.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(240, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [height]);
  const xLabel = (x: number) => ((props.xIsTime ?? true) ? new Date(x * 1000).toLocaleString() : String(x));
  return (
    <figure className="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={ref} style={{ minHeight: height }} aria-hidden="true" />
      {failed && <p className="field-error">Chart could not load: {failed}</p>}
      <details>
        <summary>Data</summary>
        <table>
          <thead>
            <tr>
              <th scope="col">{props.xIsTime === false ? "x" : "time"}</th>
              {props.series.map((s) => (
                <th scope="col" key={s.label}>
                  {s.label}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {props.x.map((x, i) => (
              <tr key={x}>
                <td>{xLabel(x)}</td>
                {props.series.map((s) => (
                  <td key={s.label}>{s.values[i] === null || s.values[i] === undefined ? "—" : fmt(s.values[i]!)}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}
