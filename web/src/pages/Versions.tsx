// The versions of a workflow, and the difference between any two of them.
import { useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api/client";
import { useLoad } from "../api/hooks";
import { diffWorkflows, showValue } from "../lib/diff";
import { fmtTime } from "../lib/format";
import { ErrorNote, Loading, PageHead } from "../components/ui";
import { processName } from "./Workflows";

export default function Versions() {
  const { id = "" } = useParams();
  const versions = useLoad(async () => (await api.workflows.listWorkflowVersions({ id, pageSize: 1000 })).workflows, [id]);
  const list = versions.data ?? [];
  const [a, setA] = useState<number | null>(null);
  const [b, setB] = useState<number | null>(null);
  const va = list.find((w) => w.version === (a ?? list[1]?.version ?? list[0]?.version));
  const vb = list.find((w) => w.version === (b ?? list[0]?.version));
  const d = va && vb ? diffWorkflows(va, vb) : null;
  if (versions.loading && !versions.data) return <Loading what="versions" />;
  return (
    <section>
      <PageHead title={`Versions of ${list[0]?.name ?? id}`}>
        <Link to={`/workflows/${id}`}>Open in the builder</Link>
      </PageHead>
      <ErrorNote error={versions.error} />
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Saved</th>
              <th scope="col">Process</th>
              <th scope="col">Steps</th>
              <th scope="col">
                <span className="sr-only">Open</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((w) => (
              <tr key={w.version}>
                <td>v{w.version}</td>
                <td>{fmtTime(w.updateTime)}</td>
                <td>{processName(w.process)}</td>
                <td>{w.steps.map((s) => s.id).join(" → ")}</td>
                <td>
                  <Link to={`/workflows/${id}?version=${w.version}`}>Open</Link>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Compare</h2>
      <div className="toolbar">
        <label htmlFor="va">From</label>
        <select id="va" value={va?.version ?? ""} onChange={(e) => setA(Number(e.target.value))}>
          {list.map((w) => (
            <option key={w.version} value={w.version}>
              v{w.version}
            </option>
          ))}
        </select>
        <label htmlFor="vb">To</label>
        <select id="vb" value={vb?.version ?? ""} onChange={(e) => setB(Number(e.target.value))}>
          {list.map((w) => (
            <option key={w.version} value={w.version}>
              v{w.version}
            </option>
          ))}
        </select>
      </div>
      {d && (
        <div className="diff" data-testid="diff">
          {d.same && <p>v{va!.version} and v{vb!.version} define the same workflow.</p>}
          {d.fields.length > 0 && (
            <table>
              <caption>Workflow fields</caption>
              <thead>
                <tr>
                  <th scope="col">Field</th>
                  <th scope="col">v{va!.version}</th>
                  <th scope="col">v{vb!.version}</th>
                </tr>
              </thead>
              <tbody>
                {d.fields.map((c) => (
                  <tr key={c.field}>
                    <th scope="row">{c.field}</th>
                    <td className="del">{showValue(c.before)}</td>
                    <td className="ins">{showValue(c.after)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {(d.steps.added.length > 0 || d.steps.removed.length > 0 || d.steps.orderChanged) && (
            <ul>
              {d.steps.added.map((s) => (
                <li key={`a${s}`} className="ins">
                  step {s} added
                </li>
              ))}
              {d.steps.removed.map((s) => (
                <li key={`r${s}`} className="del">
                  step {s} removed
                </li>
              ))}
              {d.steps.orderChanged && <li>the order of the steps changed</li>}
            </ul>
          )}
          {[...d.steps.changed.map((x) => ({ ...x, what: "step" })), ...d.inputs.changed.map((x) => ({ ...x, what: "input" }))].map((x) => (
            <table key={`${x.what}${x.id}`}>
              <caption>
                {x.what} {x.id}
              </caption>
              <tbody>
                {x.changes.map((c) => (
                  <tr key={c.field}>
                    <th scope="row">{c.field}</th>
                    <td className="del">{showValue(c.before)}</td>
                    <td className="ins">{showValue(c.after)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ))}
          {(d.inputs.added.length > 0 || d.inputs.removed.length > 0) && (
            <ul>
              {d.inputs.added.map((s) => (
                <li key={`ia${s}`} className="ins">
                  input {s} added
                </li>
              ))}
              {d.inputs.removed.map((s) => (
                <li key={`ir${s}`} className="del">
                  input {s} removed
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}
