// System health: the StreamMetrics feed as a live dashboard (requests, queue, workers, fan-out
// lag, PostgreSQL and Redis probes, per-method latencies).
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { useMemo, useState } from "react";
import { api } from "../api/client";
import { useResumable } from "../api/hooks";
import type { Event, MetricsSnapshot } from "../gen/agentz/v1/event_pb";
import { LineChart } from "../components/Chart";
import { StreamBadge } from "../components/StreamBadge";
import { Loading, PageHead, Stat } from "../components/ui";

const KEEP = 120;

export default function System() {
  const [points, setPoints] = useState<{ t: number; m: MetricsSnapshot }[]>([]);
  const [interval, setIntervalS] = useState(2);
  const stream = useResumable<Event>(
    () => ({
      open: (_after, signal, opened) => api.system.streamMetrics({ interval: { seconds: BigInt(interval) } }, { signal, onHeader: opened }),
      onEvent: (e) => {
        if (e.payload.case !== "metrics") return;
        const m = e.payload.value;
        setPoints((p) => [...p.slice(-(KEEP - 1)), { t: e.time ? timestampMs(e.time) : Date.now(), m }]);
      },
      endsWhenDone: false,
    }),
    [interval],
  );
  const last = points.at(-1)?.m;
  const charts = useMemo(() => {
    const x = points.map((p) => p.t / 1000);
    return {
      x,
      rps: [{ label: "requests/s", values: points.map((p) => p.m.requestsPerSecond) }],
      queue: [
        { label: "queue depth", values: points.map((p) => Number(p.m.queueDepth)) },
        { label: "tasks running", values: points.map((p) => Number(p.m.tasksRunning)) },
      ],
      tpm: [{ label: "tasks/min", values: points.map((p) => p.m.tasksPerMinute) }],
      lag: [{ label: "fan-out lag (ms)", values: points.map((p) => p.m.fanoutLagMs) }],
    };
  }, [points]);
  return (
    <section>
      <PageHead title="System">
        <StreamBadge state={stream} />
        <label htmlFor="m-int">Every</label>
        <select id="m-int" value={interval} onChange={(e) => (setPoints([]), setIntervalS(Number(e.target.value)))}>
          {[1, 2, 5, 10].map((s) => (
            <option key={s} value={s}>
              {s}s
            </option>
          ))}
        </select>
      </PageHead>
      {!last ? (
        <Loading what="the first metrics snapshot" />
      ) : (
        <>
          <div className="stats" data-testid="system-stats">
            <Stat label="PostgreSQL" value={<span className={last.postgresOk ? "ok" : "bad"}>{last.postgresOk ? "ok" : "down"}</span>} />
            <Stat label="Redis" value={<span className={last.redisOk ? "ok" : "bad"}>{last.redisOk ? "ok" : "down"}</span>} />
            <Stat label="workers" value={last.workers} />
            <Stat label="requests/s" value={last.requestsPerSecond.toFixed(1)} />
            <Stat label="queue depth" value={String(last.queueDepth)} />
            <Stat label="tasks running" value={String(last.tasksRunning)} />
            <Stat label="tasks/min" value={last.tasksPerMinute.toFixed(1)} />
            <Stat label="fan-out lag" value={`${last.fanoutLagMs.toFixed(1)} ms`} />
          </div>
          <div className="charts">
            <LineChart title="Requests per second" x={charts.x} series={charts.rps} />
            <LineChart title="Queue and running tasks" x={charts.x} series={charts.queue} />
            <LineChart title="Tasks finished per minute" x={charts.x} series={charts.tpm} />
            <LineChart title="Event fan-out lag" x={charts.x} series={charts.lag} format={(v) => `${v.toFixed(1)} ms`} />
          </div>
          <div className="table-wrap">
            <table>
              <caption>Methods (last interval)</caption>
              <thead>
                <tr>
                  <th scope="col">Method</th>
                  <th scope="col">Calls</th>
                  <th scope="col">Errors</th>
                  <th scope="col">p50</th>
                  <th scope="col">p99</th>
                </tr>
              </thead>
              <tbody>
                {last.methods.map((m) => (
                  <tr key={m.method}>
                    <th scope="row">{m.method}</th>
                    <td>{String(m.count)}</td>
                    <td>{String(m.errors)}</td>
                    <td>{m.p50Ms.toFixed(2)} ms</td>
                    <td>{m.p99Ms.toFixed(2)} ms</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}
