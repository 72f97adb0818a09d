// One agent: create or edit it (server field errors shown at their fields), its live status and
// metrics, its long-term memory (search, clear), its recent tasks, and delete.
import { clone, create } from "@bufbuild/protobuf";
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { api, requestId } from "../api/client";
import { formErrors, noErrors, type FormErrors } from "../api/errors";
import { useLoad, useResumable } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { AgentSchema, type Agent } from "../gen/agentz/v1/agent_pb";
import type { AgentMetrics } from "../gen/agentz/v1/common_pb";
import type { Event } from "../gen/agentz/v1/event_pb";
import { AGENTZ_TOOLS } from "../lib/tools";
import { durationText, fmtCost, fmtDuration, fmtInt, fmtTime, parseDuration } from "../lib/format";
import { Dialog, Empty, ErrorNote, Field, Loading, MoreButton, PageHead, Stat, StatusBadge } from "../components/ui";
import { StreamBadge } from "../components/StreamBadge";

interface Form {
  name: string;
  role: string;
  goal: string;
  backstory: string;
  provider: string;
  model: string;
  baseUrl: string;
  apiKeySecret: string;
  temperature: string;
  maxTokens: string;
  tools: string[];
  allowDelegation: boolean;
  maxIter: string;
  maxRpm: string;
  maxExecutionTime: string;
  memory: boolean;
  disabled: boolean;
}

const KNOWN = ["name", "role", "goal", "backstory", "llm", "llm.provider", "llm.model", "llm.base_url", "llm.api_key_secret", "llm.temperature", "llm.max_tokens", "tools", "allow_delegation", "max_iter", "max_rpm", "max_execution_time", "memory", "disabled", "labels"];

function toForm(a: Agent | undefined): Form {
  return {
    name: a?.name ?? "",
    role: a?.role ?? "",
    goal: a?.goal ?? "",
    backstory: a?.backstory ?? "",
    provider: a?.llm?.provider ?? "",
    model: a?.llm?.model ?? "",
    baseUrl: a?.llm?.baseUrl ?? "",
    apiKeySecret: a?.llm?.apiKeySecret ?? "",
    temperature: a?.llm?.temperature === undefined ? "" : String(a.llm.temperature),
    maxTokens: a?.llm?.maxTokens ? String(a.llm.maxTokens) : "",
    tools: a ? [...a.tools] : [],
    allowDelegation: a?.allowDelegation ?? false,
    maxIter: a?.maxIter ? String(a.maxIter) : "",
    maxRpm: a?.maxRpm ? String(a.maxRpm) : "",
    maxExecutionTime: durationText(a?.maxExecutionTime),
    memory: a?.memory ?? false,
    disabled: a?.disabled ?? false,
  };
}

/** The form as an Agent; numbers the server should judge are passed through as typed. */
function fromForm(f: Form, base: Agent | undefined): { agent: Agent; local: Record<string, string> } {
  const local: Record<string, string> = {};
  const a = base ? clone(AgentSchema, base) : create(AgentSchema, {});
  a.name = f.name.trim();
  a.role = f.role;
  a.goal = f.goal;
  a.backstory = f.backstory;
  const num = (v: string, field: string, int: boolean): number => {
    if (!v.trim()) return 0;
    const n = Number(v);
    if (!Number.isFinite(n) || (int && !Number.isInteger(n))) local[field] = `${field}: "${v}" is not ${int ? "a whole number" : "a number"}`;
    return n;
  };
  const llmSet = f.provider || f.model || f.baseUrl || f.apiKeySecret || f.temperature || f.maxTokens;
  a.llm = llmSet
    ? create(AgentSchema, {
        llm: {
          provider: f.provider,
          model: f.model.trim(),
          baseUrl: f.baseUrl.trim(),
          apiKeySecret: f.apiKeySecret,
          temperature: f.temperature.trim() ? num(f.temperature, "llm.temperature", false) : undefined,
          maxTokens: num(f.maxTokens, "llm.max_tokens", true),
          timeout: base?.llm?.timeout,
        },
      }).llm
    : undefined;
  a.tools = f.tools;
  a.allowDelegation = f.allowDelegation;
  a.maxIter = num(f.maxIter, "max_iter", true);
  a.maxRpm = num(f.maxRpm, "max_rpm", true);
  if (f.maxExecutionTime.trim()) {
    const d = parseDuration(f.maxExecutionTime);
    if (!d) local.max_execution_time = `max_execution_time: "${f.maxExecutionTime}" is not a duration (e.g. 300s, 5m)`;
    else a.maxExecutionTime = create(AgentSchema, { maxExecutionTime: d }).maxExecutionTime;
  } else a.maxExecutionTime = undefined;
  a.memory = f.memory;
  a.disabled = f.disabled;
  return { agent: a, local };
}

export default function AgentDetail() {
  const { id } = useParams();
  const isNew = !id;
  const auth = useAuth();
  const nav = useNavigate();
  const canWrite = auth.can("write");
  const [editing, setEditing] = useState(isNew);
  const agent = useLoad(async () => (id ? api.agents.getAgent({ id }) : undefined), [id]);
  const [status, setStatus] = useState<number | null>(null);
  const [live, setLive] = useState<AgentMetrics | null>(null);
  const onEvent = useCallback((e: Event) => {
    if (e.payload.case === "agentStatus") setStatus(e.payload.value.to);
    if (e.payload.case === "agentMetrics") setLive(e.payload.value);
  }, []);
  const stream = useResumable<Event>(
    () => (id ? { open: (after, signal, opened) => api.agents.watchAgents({ agentIds: [id], afterSequence: after, includeMetrics: true }, { signal, onHeader: opened }), onEvent, endsWhenDone: false } : null),
    [id],
  );
  const metrics = useLoad(async () => (id ? api.agents.getAgentMetrics({ agentId: id }) : undefined), [id]);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(null);

  if (!isNew && agent.loading && !agent.data) return <Loading what="the agent" />;
  if (!isNew && !agent.data) return <ErrorNote error={agent.error} />;
  const a = agent.data;
  const m = live ?? metrics.data;

  const remove = async () => {
    try {
      await api.agents.deleteAgent({ id: a!.id, etag: a!.etag });
      nav("/agents");
    } catch (e) {
      setDeleteError(e);
      setConfirmDelete(false);
    }
  };

  return (
    <section>
      <PageHead title={isNew ? "New agent" : a!.name || a!.role}>
        {!isNew && <StreamBadge state={stream} />}
        {!isNew && <StatusBadge kind="agent" status={status ?? a!.status} />}
        {!isNew && canWrite && !editing && (
          <button type="button" onClick={() => setEditing(true)}>
            Edit
          </button>
        )}
        {!isNew && canWrite && (
          <button type="button" className="danger" onClick={() => setConfirmDelete(true)}>
            Delete
          </button>
        )}
      </PageHead>
      <ErrorNote error={deleteError} prefix="Delete failed" />
      {isNew && !canWrite && <ErrorNote error="Your role cannot create agents (it needs editor)." />}
      {editing && canWrite ? (
        <AgentForm
          agent={a}
          onSaved={(saved) => {
            setEditing(false);
            if (isNew) nav(`/agents/${saved.id}`, { replace: true });
            else agent.reload();
          }}
          onCancel={() => (isNew ? nav("/agents") : setEditing(false))}
        />
      ) : (
        a && <AgentSummary agent={a} />
      )}
      {!isNew && a && (
        <>
          <h2>Metrics (last 24 hours{live ? ", live" : ""})</h2>
          <ErrorNote error={metrics.error} />
          {m && (
            <div className="stats">
              <Stat label="tasks" value={fmtInt(m.tasksTotal)} />
              <Stat label="running now" value={fmtInt(m.tasksRunning)} />
              <Stat label="succeeded" value={fmtInt(m.tasksSucceeded)} />
              <Stat label="failed" value={fmtInt(m.tasksFailed)} />
              <Stat label="p50 duration" value={fmtDuration(m.p50Duration)} />
              <Stat label="p95 duration" value={fmtDuration(m.p95Duration)} />
              <Stat label="tokens" value={fmtInt(m.usage?.totalTokens)} />
              <Stat label="cost" value={fmtCost(m.usage?.costUsd)} />
            </div>
          )}
          <p>
            <Link to={`/analytics?agent=${a.id}`}>Metrics over time</Link> · <Link to={`/tasks?agent=${a.id}`}>Tasks of this agent</Link>
          </p>
          <Memory agentId={a.id} memoryOn={a.memory} />
        </>
      )}
      <Dialog open={confirmDelete} title="Delete agent" onClose={() => setConfirmDelete(false)}>
        <p>Delete {a?.name || a?.id}? Workflows whose steps use it must be changed first.</p>
        <div className="actions">
          <button type="button" className="danger" onClick={() => void remove()}>
            Delete
          </button>
          <button type="button" onClick={() => setConfirmDelete(false)}>
            Cancel
          </button>
        </div>
      </Dialog>
    </section>
  );
}

function AgentSummary({ agent: a }: { agent: Agent }) {
  return (
    <dl className="kv">
      <dt>Role</dt>
      <dd>{a.role}</dd>
      <dt>Goal</dt>
      <dd>{a.goal}</dd>
      <dt>Backstory</dt>
      <dd className="pre">{a.backstory}</dd>
      <dt>Model</dt>
      <dd>{a.llm?.model ? `${a.llm.provider}/${a.llm.model}${a.llm.baseUrl ? ` at ${a.llm.baseUrl}` : ""}` : "server default"}</dd>
      <dt>API key secret</dt>
      <dd>{a.llm?.apiKeySecret || "server default"}</dd>
      <dt>Tools</dt>
      <dd>{a.tools.join(", ") || "none"}</dd>
      <dt>Delegation</dt>
      <dd>{a.allowDelegation ? "may delegate to other agents of the run" : "off"}</dd>
      <dt>Limits</dt>
      <dd>
        max_iter {a.maxIter || 25}, max_rpm {a.maxRpm || "unlimited"}, max_execution_time {fmtDuration(a.maxExecutionTime)}
      </dd>
      <dt>Memory</dt>
      <dd>{a.memory ? "on" : "off"}</dd>
      <dt>Disabled</dt>
      <dd>{a.disabled ? "yes" : "no"}</dd>
      <dt>Id</dt>
      <dd>
        <code>{a.id}</code>
      </dd>
      <dt>Updated</dt>
      <dd>{fmtTime(a.updateTime)}</dd>
    </dl>
  );
}

export function AgentForm({ agent, onSaved, onCancel }: { agent: Agent | undefined; onSaved: (a: Agent) => void; onCancel: () => void }) {
  const auth = useAuth();
  const [f, setF] = useState<Form>(() => toForm(agent));
  const [errors, setErrors] = useState<FormErrors>(noErrors);
  const [busy, setBusy] = useState(false);
  const [rid] = useState(requestId);
  const secrets = useLoad(async () => (auth.can("secrets") ? (await api.system.listSecrets({ pageSize: 1000 })).secrets : []), []);
  const models = useLoad(async () => {
    const r = await api.agents.listAgents({ pageSize: 1000 });
    return [...new Set(r.agents.filter((x) => x.llm?.model).map((x) => `${x.llm!.model}`))].sort();
  }, []);
  const set = <K extends keyof Form>(k: K, v: Form[K]) => setF((x) => ({ ...x, [k]: v }));
  const err = (k: string) => errors.fields[k];
  const formRef = useRef<HTMLFormElement>(null);
  useFocusFirstError(formRef, errors);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const { agent: a, local } = fromForm(f, agent);
    if (Object.keys(local).length) {
      setErrors({ fields: local, form: null, code: null });
      return;
    }
    setBusy(true);
    setErrors(noErrors);
    try {
      const saved = agent
        ? await api.agents.updateAgent({
            agent: a,
            updateMask: { paths: ["name", "role", "goal", "backstory", "llm", "tools", "allow_delegation", "max_iter", "max_rpm", "max_execution_time", "memory", "disabled"] },
          })
        : await api.agents.createAgent({ agent: a, requestId: rid });
      onSaved(saved);
    } catch (ex) {
      setErrors(formErrors(ex, "agent", KNOWN));
    } finally {
      setBusy(false);
    }
  };
  const tools = [...new Set([...AGENTZ_TOOLS, ...f.tools])];
  return (
    <form ref={formRef} className="form" onSubmit={(e) => void submit(e)} noValidate aria-label={agent ? "Edit agent" : "New agent"}>
      {errors.form && (
        <div className="error-note" role="alert">
          {errors.form}
        </div>
      )}
      <Field label="Name" error={err("name")} hint="Unique in the workspace, at most 128 characters.">
        {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={f.name} onChange={(e) => set("name", e.target.value)} />}
      </Field>
      <Field label="Role" error={err("role")} hint='The agent&apos;s function, e.g. "Senior Data Researcher". {input} placeholders are filled from run inputs.'>
        {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={f.role} onChange={(e) => set("role", e.target.value)} />}
      </Field>
      <Field label="Goal" error={err("goal")}>
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} rows={2} value={f.goal} onChange={(e) => set("goal", e.target.value)} />}
      </Field>
      <Field label="Backstory" error={err("backstory")}>
        {(p) => <textarea id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} rows={4} value={f.backstory} onChange={(e) => set("backstory", e.target.value)} />}
      </Field>
      <fieldset>
        <legend>LLM</legend>
        {err("llm") && (
          <p className="field-error" role="alert">
            {err("llm")}
          </p>
        )}
        <div className="grid2">
          <Field label="Provider" error={err("llm.provider")}>
            {(p) => (
              <select id={p.id} aria-describedby={p.describedBy} value={f.provider} onChange={(e) => set("provider", e.target.value)}>
                <option value="">server default</option>
                <option value="openai">openai (any OpenAI-compatible endpoint)</option>
                <option value="anthropic">anthropic</option>
              </select>
            )}
          </Field>
          <Field label="Model" error={err("llm.model")} hint="As the provider names it, e.g. gpt-4o-mini.">
            {(p) => (
              <>
                <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} list="models" value={f.model} onChange={(e) => set("model", e.target.value)} />
                <datalist id="models">
                  {(models.data ?? []).map((m) => (
                    <option key={m} value={m} />
                  ))}
                </datalist>
              </>
            )}
          </Field>
          <Field label="Base URL" error={err("llm.base_url")} hint="Empty = the provider's default endpoint.">
            {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={f.baseUrl} onChange={(e) => set("baseUrl", e.target.value)} />}
          </Field>
          <Field label="API key secret" error={err("llm.api_key_secret")} hint="The name of a stored secret holding the key.">
            {(p) =>
              auth.can("secrets") ? (
                <select id={p.id} aria-describedby={p.describedBy} value={f.apiKeySecret} onChange={(e) => set("apiKeySecret", e.target.value)}>
                  <option value="">server default</option>
                  {(secrets.data ?? []).map((s) => (
                    <option key={s.name} value={s.name}>
                      {s.name}
                    </option>
                  ))}
                  {f.apiKeySecret && !(secrets.data ?? []).some((s) => s.name === f.apiKeySecret) && <option value={f.apiKeySecret}>{f.apiKeySecret}</option>}
                </select>
              ) : (
                <input id={p.id} aria-describedby={p.describedBy} value={f.apiKeySecret} onChange={(e) => set("apiKeySecret", e.target.value)} />
              )
            }
          </Field>
          <Field label="Temperature" error={err("llm.temperature")} hint="Empty = the provider's default.">
            {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} inputMode="decimal" value={f.temperature} onChange={(e) => set("temperature", e.target.value)} />}
          </Field>
          <Field label="Max tokens per call" error={err("llm.max_tokens")}>
            {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} inputMode="numeric" value={f.maxTokens} onChange={(e) => set("maxTokens", e.target.value)} />}
          </Field>
        </div>
      </fieldset>
      <fieldset>
        <legend>Tools</legend>
        {err("tools") && (
          <p className="field-error" role="alert">
            {err("tools")}
          </p>
        )}
        {tools.map((t) => (
          <label key={t} className="check">
            <input type="checkbox" checked={f.tools.includes(t)} onChange={(e) => set("tools", e.target.checked ? [...f.tools, t] : f.tools.filter((x) => x !== t))} /> {t}
          </label>
        ))}
      </fieldset>
      <fieldset>
        <legend>Behaviour</legend>
        <label className="check switch">
          <input type="checkbox" role="switch" checked={f.allowDelegation} onChange={(e) => set("allowDelegation", e.target.checked)} /> Allow delegation to other agents of the run
        </label>
        <label className="check switch">
          <input type="checkbox" role="switch" checked={f.memory} onChange={(e) => set("memory", e.target.checked)} /> Long-term memory
        </label>
        <label className="check switch">
          <input type="checkbox" role="switch" checked={f.disabled} onChange={(e) => set("disabled", e.target.checked)} /> Disabled (takes no new tasks)
        </label>
        <div className="grid3">
          <Field label="Max iterations" error={err("max_iter")} hint="1..100; empty = 25.">
            {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} inputMode="numeric" value={f.maxIter} onChange={(e) => set("maxIter", e.target.value)} />}
          </Field>
          <Field label="Max calls per minute" error={err("max_rpm")} hint="Empty = unlimited.">
            {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} inputMode="numeric" value={f.maxRpm} onChange={(e) => set("maxRpm", e.target.value)} />}
          </Field>
          <Field label="Max execution time" error={err("max_execution_time")} hint="e.g. 300s or 5m; empty = none.">
            {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={f.maxExecutionTime} onChange={(e) => set("maxExecutionTime", e.target.value)} />}
          </Field>
        </div>
      </fieldset>
      <div className="actions">
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Saving…" : agent ? "Save" : "Create agent"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/** After a failed submit, moves focus to the first invalid field (or the form's error). */
export function useFocusFirstError(form: React.RefObject<HTMLFormElement | null>, errors: FormErrors): void {
  useEffect(() => {
    if (!errors.form && Object.keys(errors.fields).length === 0) return;
    const el = form.current?.querySelector<HTMLElement>('[aria-invalid="true"], .error-note');
    if (el) {
      if (!el.hasAttribute("tabindex") && el.classList.contains("error-note")) el.setAttribute("tabindex", "-1");
      el.focus();
      el.scrollIntoView({ block: "center" });
    }
  }, [errors, form]);
}

function Memory({ agentId, memoryOn }: { agentId: string; memoryOn: boolean }) {
  const auth = useAuth();
  const [query, setQuery] = useState("");
  const [applied, setApplied] = useState("");
  const [extra, setExtra] = useState<{ entries: Awaited<ReturnType<typeof api.agents.getAgentMemory>>["entries"]; next: string } | null>(null);
  const mem = useLoad(async () => {
    setExtra(null);
    return api.agents.getAgentMemory({ agentId, query: applied, pageSize: 50 });
  }, [agentId, applied]);
  const [confirm, setConfirm] = useState(false);
  const [err, setErr] = useState<unknown>(null);
  const entries = [...(mem.data?.entries ?? []), ...(extra?.entries ?? [])];
  const next = extra ? extra.next : (mem.data?.nextPageToken ?? "");
  const clear = async () => {
    try {
      await api.agents.clearAgentMemory({ agentId });
      setConfirm(false);
      mem.reload();
    } catch (e) {
      setErr(e);
      setConfirm(false);
    }
  };
  return (
    <section aria-labelledby="mem-h">
      <h2 id="mem-h">Memory</h2>
      {!memoryOn && <p className="muted">Long-term memory is off for this agent; entries it wrote before stay until cleared.</p>}
      <form
        className="toolbar"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(query);
        }}
      >
        <label htmlFor="mem-q">Search</label>
        <input id="mem-q" value={query} onChange={(e) => setQuery(e.target.value)} />
        <button type="submit">Search</button>
        {auth.can("write") && (
          <button type="button" className="danger" onClick={() => setConfirm(true)} disabled={entries.length === 0}>
            Clear memory
          </button>
        )}
      </form>
      <ErrorNote error={mem.error ?? err} />
      {mem.loading && !mem.data ? (
        <Loading what="memory" />
      ) : entries.length === 0 ? (
        <Empty>No memory entries{applied ? ` matching "${applied}"` : ""}.</Empty>
      ) : (
        <ul className="plain memory">
          {entries.map((e) => (
            <li key={e.id}>
              <p className="pre">{e.summary}</p>
              <p className="muted small">
                {fmtTime(e.createTime)} · task <Link to={`/tasks/${e.taskId}`}>{e.taskId.slice(0, 8)}</Link>
                {e.runId && (
                  <>
                    {" "}
                    · run <Link to={`/runs/${e.runId}`}>{e.runId.slice(0, 8)}</Link>
                  </>
                )}
              </p>
            </li>
          ))}
        </ul>
      )}
      <MoreButton
        token={next}
        onMore={() =>
          void api.agents.getAgentMemory({ agentId, query: applied, pageSize: 50, pageToken: next }).then((r) => setExtra((x) => ({ entries: [...(x?.entries ?? []), ...r.entries], next: r.nextPageToken })))
        }
      />
      <Dialog open={confirm} title="Clear memory" onClose={() => setConfirm(false)}>
        <p>Forget everything this agent remembered? This cannot be undone.</p>
        <div className="actions">
          <button type="button" className="danger" onClick={() => void clear()}>
            Clear memory
          </button>
          <button type="button" onClick={() => setConfirm(false)}>
            Cancel
          </button>
        </div>
      </Dialog>
    </section>
  );
}
