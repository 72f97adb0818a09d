// Workflows: the list, templates to instantiate, and CrewAI import (agents.yaml + tasks.yaml,
// mapped exactly as `agentz import crewai` does, warnings shown) and export.
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { api, requestId } from "../api/client";
import { describeError } from "../api/errors";
import { useLoad } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { Process, type Workflow } from "../gen/agentz/v1/workflow_pb";
import { bindWorkflowAgents, CrewaiError, exportCrew, importCrew, planCrewImport, type CrewImport, type ProcessFlag } from "../lib/crewai";
import { fmtTime } from "../lib/format";
import { Dialog, Empty, ErrorNote, Field, Loading, MoreButton, PageHead } from "../components/ui";

export const processName = (p: Process) => (Process[p] ?? "UNSPECIFIED").toLowerCase();

export default function Workflows() {
  const auth = useAuth();
  const [extra, setExtra] = useState<{ wfs: Workflow[]; next: string } | null>(null);
  const list = useLoad(async () => {
    setExtra(null);
    return api.workflows.listWorkflows({ pageSize: 50 });
  }, []);
  const templates = useLoad(async () => (await api.workflows.listTemplates({ pageSize: 100 })).templates, []);
  const [importing, setImporting] = useState(false);
  const [instantiate, setInstantiate] = useState<{ id: string; name: string } | null>(null);
  const [exported, setExported] = useState<{ wf: Workflow; files?: ReturnType<typeof exportCrew>; error?: string } | null>(null);
  const wfs = [...(list.data?.workflows ?? []), ...(extra?.wfs ?? [])];
  const next = extra ? extra.next : (list.data?.nextPageToken ?? "");
  const canWrite = auth.can("write");

  const doExport = async (wf: Workflow) => {
    try {
      const ids = [...new Set(wf.steps.map((s) => s.agentId).filter(Boolean))];
      const agents = await Promise.all(ids.map((id) => api.agents.getAgent({ id })));
      setExported({ wf, files: exportCrew(wf, agents) });
    } catch (e) {
      setExported({ wf, error: e instanceof CrewaiError ? e.message : describeError(e) });
    }
  };

  return (
    <section>
      <PageHead title="Workflows">
        {canWrite && (
          <>
            <Link className="button primary" to="/workflows/new">
              New workflow
            </Link>
            <button type="button" onClick={() => setImporting(true)}>
              Import CrewAI
            </button>
          </>
        )}
      </PageHead>
      <ErrorNote error={list.error} />
      {list.loading && !list.data ? (
        <Loading what="workflows" />
      ) : wfs.length === 0 ? (
        <Empty>No workflows yet.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Workflows</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Version</th>
                <th scope="col">Process</th>
                <th scope="col">Steps</th>
                <th scope="col">Updated</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {wfs.map((w) => (
                <tr key={w.id}>
                  <td>
                    <Link to={`/workflows/${w.id}`}>{w.name}</Link>
                  </td>
                  <td>
                    <Link to={`/workflows/${w.id}/versions`}>v{w.version}</Link>
                  </td>
                  <td>{processName(w.process)}</td>
                  <td>{w.steps.length}</td>
                  <td>{fmtTime(w.updateTime)}</td>
                  <td className="actions">
                    <Link to={`/runs?workflow=${w.id}`}>Runs</Link>
                    <Link to={`/analytics?workflow=${w.id}`}>Analytics</Link>
                    <button type="button" className="link" onClick={() => void doExport(w)}>
                      Export CrewAI
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <MoreButton token={next} onMore={() => void api.workflows.listWorkflows({ pageSize: 50, pageToken: next }).then((r) => setExtra((x) => ({ wfs: [...(x?.wfs ?? []), ...r.workflows], next: r.nextPageToken })))} />

      <h2>Templates</h2>
      <ErrorNote error={templates.error} />
      <ul className="cards">
        {(templates.data ?? []).map((t) => (
          <li key={t.id} className="card">
            <h3>{t.name}</h3>
            <p>{t.description}</p>
            <p className="muted small">
              {t.builtin ? "built in" : `saved ${fmtTime(t.createTime)}`} · {t.agents.length} agents · {t.workflow?.steps.length ?? 0} steps · {processName(t.workflow?.process ?? Process.UNSPECIFIED)}
            </p>
            {canWrite && (
              <button type="button" onClick={() => setInstantiate({ id: t.id, name: t.workflow?.name ?? t.name })}>
                Use template
              </button>
            )}
          </li>
        ))}
      </ul>
      <Dialog open={!!instantiate} title="Use template" onClose={() => setInstantiate(null)}>
        {instantiate && <InstantiateForm templateId={instantiate.id} defaultName={instantiate.name} />}
      </Dialog>
      <Dialog open={importing} title="Import a CrewAI crew" onClose={() => setImporting(false)}>
        {importing && <ImportForm />}
      </Dialog>
      <Dialog open={!!exported} title={`Export ${exported?.wf.name ?? ""} as CrewAI files`} onClose={() => setExported(null)}>
        {exported?.error && <div className="error-note">{exported.error}</div>}
        {exported?.files && <ExportView name={exported.wf.name} files={exported.files} />}
      </Dialog>
    </section>
  );
}

function InstantiateForm({ templateId, defaultName }: { templateId: string; defaultName: string }) {
  const [name, setName] = useState(defaultName);
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [rid] = useState(requestId);
  const nav = useNavigate();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    try {
      const r = await api.workflows.instantiateTemplate({ templateId, name, requestId: rid });
      nav(`/workflows/${r.workflow!.id}`);
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form" onSubmit={(e) => void submit(e)} noValidate>
      <ErrorNote error={err} />
      <Field label="Workflow name" hint="The agents are named with it as a prefix.">
        {(p) => <input id={p.id} aria-describedby={p.describedBy} value={name} onChange={(e) => setName(e.target.value)} />}
      </Field>
      <button type="submit" className="primary" disabled={busy}>
        {busy ? "Creating…" : "Create agents and workflow"}
      </button>
    </form>
  );
}

function ImportForm() {
  const [agentsText, setAgents] = useState("");
  const [tasksText, setTasks] = useState("");
  const [project, setProject] = useState("crew");
  const [name, setName] = useState("");
  const [process, setProcess] = useState<"" | ProcessFlag>("");
  const [managerLlm, setManagerLlm] = useState("");
  const [preview, setPreview] = useState<CrewImport | null>(null);
  const [err, setErr] = useState<string | null>(null);
  const [progress, setProgress] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const nav = useNavigate();
  const opts = () => ({ name: name.trim() || project.trim(), source: project.trim(), process: process || undefined, managerLlm: managerLlm.trim() || undefined });
  const readFile = (setter: (s: string) => void) => (e: React.ChangeEvent<HTMLInputElement>) => {
    const f = e.target.files?.[0];
    if (f) void f.text().then(setter);
  };
  const doPreview = () => {
    setErr(null);
    try {
      setPreview(importCrew(agentsText, tasksText, opts()));
    } catch (e) {
      setPreview(null);
      setErr(e instanceof Error ? e.message : String(e));
    }
  };
  const doImport = async () => {
    setErr(null);
    setBusy(true);
    const o = opts();
    const made: string[] = [];
    try {
      const imp = importCrew(agentsText, tasksText, o);
      const plan = planCrewImport(agentsText, tasksText, o, imp);
      const ids = new Map<string, string>();
      for (const a of plan.agents) {
        const created = await api.agents.createAgent({ agent: a.agent, requestId: a.requestId });
        ids.set(a.key, created.id);
        made.push(`agent ${created.id} ${created.name}`);
        setProgress([...made]);
      }
      const wf = await api.workflows.createWorkflow({ workflow: bindWorkflowAgents(imp.template.workflow!, ids), requestId: plan.workflowRequestId });
      nav(`/workflows/${wf.id}`);
    } catch (e) {
      setErr(`${e instanceof CrewaiError ? e.message : describeError(e)}${made.length ? " — created before the failure (importing the same files again reuses them)." : ""}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="form">
      <p className="muted">
        The same mapping as <code>agentz import crewai DIR</code>: one agent per agents.yaml key (named <code>workflow/key</code>), one step per task, placeholders as inputs; importing the same files again
        returns the objects created the first time.
      </p>
      <div className="grid2">
        <Field label="agents.yaml">
          {(p) => (
            <>
              <input id={p.id} type="file" accept=".yaml,.yml,text/yaml" onChange={readFile(setAgents)} />
              <textarea aria-label="agents.yaml text" rows={8} className="mono" value={agentsText} onChange={(e) => setAgents(e.target.value)} />
            </>
          )}
        </Field>
        <Field label="tasks.yaml">
          {(p) => (
            <>
              <input id={p.id} type="file" accept=".yaml,.yml,text/yaml" onChange={readFile(setTasks)} />
              <textarea aria-label="tasks.yaml text" rows={8} className="mono" value={tasksText} onChange={(e) => setTasks(e.target.value)} />
            </>
          )}
        </Field>
      </div>
      <div className="grid2">
        <Field label="Project (directory) name" hint="The CLI uses the directory's name; it goes into the description.">
          {(p) => <input id={p.id} aria-describedby={p.describedBy} value={project} onChange={(e) => setProject(e.target.value)} />}
        </Field>
        <Field label="Workflow name" hint="Empty = the project name (--name).">
          {(p) => <input id={p.id} aria-describedby={p.describedBy} value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <Field label="Process" hint="--process; default: sequential, or parallel when tasks need it.">
          {(p) => (
            <select id={p.id} aria-describedby={p.describedBy} value={process} onChange={(e) => setProcess(e.target.value as "" | ProcessFlag)}>
              <option value="">from the files</option>
              <option value="sequential">sequential</option>
              <option value="parallel">parallel</option>
              <option value="hierarchical">hierarchical</option>
            </select>
          )}
        </Field>
        <Field label="Manager LLM" hint="--manager-llm, e.g. openai/gpt-4o; implies hierarchical.">
          {(p) => <input id={p.id} aria-describedby={p.describedBy} value={managerLlm} onChange={(e) => setManagerLlm(e.target.value)} />}
        </Field>
      </div>
      {err && (
        <div className="error-note" role="alert">
          {err}
        </div>
      )}
      {progress.length > 0 && (
        <ul className="plain small">
          {progress.map((p) => (
            <li key={p}>{p}</li>
          ))}
        </ul>
      )}
      {preview && (
        <div className="preview">
          <h3>Preview</h3>
          <p>
            {preview.template.agents.length} agents, {preview.template.workflow!.steps.length} steps, process {processName(preview.template.workflow!.process)}, inputs:{" "}
            {preview.template.workflow!.inputs.map((i) => i.name).join(", ") || "none"}
          </p>
          {preview.notes.length > 0 && (
            <>
              <h4>Warnings</h4>
              <ul className="warnings">
                {preview.notes.map((n) => (
                  <li key={n}>{n}</li>
                ))}
              </ul>
            </>
          )}
        </div>
      )}
      <div className="actions">
        <button type="button" onClick={doPreview}>
          Preview
        </button>
        <button type="button" className="primary" disabled={busy} onClick={() => void doImport()}>
          {busy ? "Importing…" : "Import"}
        </button>
      </div>
    </div>
  );
}

function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/yaml" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function ExportView({ files }: { name: string; files: ReturnType<typeof exportCrew> }) {
  return (
    <div className="form">
      {files.notes.length > 0 && (
        <>
          <h3>Warnings</h3>
          <ul className="warnings">
            {files.notes.map((n) => (
              <li key={n}>{n}</li>
            ))}
          </ul>
        </>
      )}
      <div className="grid2">
        <div>
          <h3>config/agents.yaml</h3>
          <pre className="output">{files.agentsYaml}</pre>
          <button type="button" onClick={() => download("agents.yaml", files.agentsYaml)}>
            Download agents.yaml
          </button>
        </div>
        <div>
          <h3>config/tasks.yaml</h3>
          <pre className="output">{files.tasksYaml}</pre>
          <button type="button" onClick={() => download("tasks.yaml", files.tasksYaml)}>
            Download tasks.yaml
          </button>
        </div>
      </div>
    </div>
  );
}
