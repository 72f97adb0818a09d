// Agents: the workspace's agents with their live status (WatchAgents).
import { clone } from "@bufbuild/protobuf";
import { useCallback, useState } from "react";
import { Link } from "react-router";
import { api } from "../api/client";
import { useLoad, useResumable } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { AgentStatus } from "../gen/agentz/v1/common_pb";
import { AgentSchema, type Agent } from "../gen/agentz/v1/agent_pb";
import type { Event } from "../gen/agentz/v1/event_pb";
import { Empty, ErrorNote, Loading, MoreButton, PageHead, StatusBadge } from "../components/ui";
import { StreamBadge } from "../components/StreamBadge";

export default function Agents() {
  const auth = useAuth();
  const [filter, setFilter] = useState<AgentStatus>(AgentStatus.UNSPECIFIED);
  const [agents, setAgents] = useState<Agent[]>([]);
  const [next, setNext] = useState("");
  const [total, setTotal] = useState(0);
  const list = useLoad(async () => {
    const r = await api.agents.listAgents({ pageSize: 100, status: filter });
    setAgents(r.agents);
    setNext(r.nextPageToken);
    setTotal(r.totalSize);
    return r;
  }, [filter]);
  const more = async () => {
    const r = await api.agents.listAgents({ pageSize: 100, status: filter, pageToken: next });
    setAgents((a) => [...a, ...r.agents]);
    setNext(r.nextPageToken);
  };
  const onEvent = useCallback(
    (e: Event) => {
      if (e.payload.case !== "agentStatus") return;
      const to = e.payload.value.to;
      setAgents((list0) => {
        const i = list0.findIndex((a) => a.id === e.agentId);
        if (i < 0) {
          list.reload(); // a new agent: read the list again
          return list0;
        }
        const copy = [...list0];
        const updated = clone(AgentSchema, copy[i]!);
        updated.status = to;
        copy[i] = updated;
        return copy;
      });
    },
    [list],
  );
  const stream = useResumable<Event>(
    () => ({
      open: (after, signal, opened) => api.agents.watchAgents({ afterSequence: after }, { signal, onHeader: opened }),
      onEvent,
      // after_sequence 0 means "only new events": after a gap, read the statuses again
      onReconnected: () => list.reload(),
      endsWhenDone: false,
    }),
    [],
  );
  return (
    <section>
      <PageHead title="Agents">
        <StreamBadge state={stream} />
        {auth.can("write") && (
          <Link className="button primary" to="/agents/new">
            New agent
          </Link>
        )}
      </PageHead>
      <div className="toolbar">
        <label htmlFor="agent-filter">Status</label>
        <select id="agent-filter" value={filter} onChange={(e) => setFilter(Number(e.target.value) as AgentStatus)}>
          <option value={AgentStatus.UNSPECIFIED}>any</option>
          <option value={AgentStatus.IDLE}>idle</option>
          <option value={AgentStatus.BUSY}>busy</option>
          <option value={AgentStatus.ERROR}>error</option>
          <option value={AgentStatus.DISABLED}>disabled</option>
        </select>
        <span className="muted">{total} agents</span>
      </div>
      <ErrorNote error={list.error} />
      {list.loading && !list.data ? (
        <Loading what="agents" />
      ) : agents.length === 0 ? (
        <Empty>No agents yet.{auth.can("write") ? " Create one, instantiate a template or import a CrewAI crew." : ""}</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Agents</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Model</th>
                <th scope="col">Tools</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {agents.map((a) => (
                <tr key={a.id} data-agent={a.id}>
                  <td>
                    <Link to={`/agents/${a.id}`}>{a.name || a.id}</Link>
                  </td>
                  <td>{a.role}</td>
                  <td>{a.llm?.model ? `${a.llm.provider}/${a.llm.model}` : "server default"}</td>
                  <td>{a.tools.join(", ") || "—"}</td>
                  <td>
                    <StatusBadge kind="agent" status={a.status} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <MoreButton token={next} onMore={() => void more()} />
    </section>
  );
}
