// The audit log (admins): every state-changing or denied call, newest first, with filters.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { useState } from "react";
import { api } from "../api/client";
import { useLoad } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import type { AuditEntry } from "../gen/agentz/v1/system_pb";
import { fmtTime } from "../lib/format";
import { Empty, ErrorNote, Loading, MoreButton, PageHead } from "../components/ui";

export default function Audit() {
  const auth = useAuth();
  const [principal, setPrincipal] = useState("");
  const [method, setMethod] = useState("");
  const [since, setSince] = useState("");
  const [applied, setApplied] = useState({ principal: "", method: "", since: "" });
  const [extra, setExtra] = useState<{ entries: AuditEntry[]; next: string } | null>(null);
  const req = () => ({ principal: applied.principal, method: applied.method, startTime: applied.since ? timestampFromDate(new Date(applied.since)) : undefined, pageSize: 100 });
  const list = useLoad(async () => {
    setExtra(null);
    return api.system.listAuditLog(req());
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [applied]);
  if (!auth.can("audit")) return <ErrorNote error="The audit log needs the admin role." />;
  const entries = [...(list.data?.entries ?? []), ...(extra?.entries ?? [])];
  const next = extra ? extra.next : (list.data?.nextPageToken ?? "");
  return (
    <section>
      <PageHead title="Audit log" />
      <form
        className="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied({ principal, method, since });
        }}
      >
        <label htmlFor="au-p">Principal</label>
        <input id="au-p" value={principal} onChange={(e) => setPrincipal(e.target.value)} placeholder="key:…" />
        <label htmlFor="au-m">Method</label>
        <input id="au-m" value={method} onChange={(e) => setMethod(e.target.value)} placeholder="/agentz.v1.AgentService/DeleteAgent" />
        <label htmlFor="au-s">Since</label>
        <input id="au-s" type="datetime-local" value={since} onChange={(e) => setSince(e.target.value)} />
        <button type="submit">Filter</button>
      </form>
      <ErrorNote error={list.error} />
      {list.loading && !list.data ? (
        <Loading what="the audit log" />
      ) : entries.length === 0 ? (
        <Empty>No entries.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Audit entries</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Principal</th>
                <th scope="col">Method</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">Peer</th>
                <th scope="col">Request id</th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.id} title={`hash ${e.hash}`}>
                  <td>{fmtTime(e.time)}</td>
                  <td>{e.principal}</td>
                  <td>{e.method.replace("/agentz.v1.", "")}</td>
                  <td>{e.targetId}</td>
                  <td className={e.outcome === "OK" ? "ok" : "bad"}>{e.outcome}</td>
                  <td>{e.peer}</td>
                  <td>{e.requestId}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <MoreButton token={next} onMore={() => void api.system.listAuditLog({ ...req(), pageToken: next }).then((r) => setExtra((x) => ({ entries: [...(x?.entries ?? []), ...r.entries], next: r.nextPageToken })))} />
    </section>
  );
}
