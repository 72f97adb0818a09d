// Secrets (editors): names and times only. A value can be set or replaced, never read back.
import { useState, type FormEvent } from "react";
import { api, requestId } from "../api/client";
import { formErrors, noErrors, type FormErrors } from "../api/errors";
import { useLoad } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { fmtTime } from "../lib/format";
import { Empty, ErrorNote, Field, Loading, PageHead } from "../components/ui";

export default function Secrets() {
  const auth = useAuth();
  const list = useLoad(async () => (await api.system.listSecrets({ pageSize: 1000 })).secrets, []);
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [errors, setErrors] = useState<FormErrors>(noErrors);
  const [done, setDone] = useState<string | null>(null);
  const [delError, setDelError] = useState<unknown>(null);
  if (!auth.can("secrets")) return <ErrorNote error="Secrets need the editor role." />;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors(noErrors);
    setDone(null);
    try {
      const s = await api.system.createSecret({ name: name.trim(), value, requestId: requestId() });
      setValue("");
      setName("");
      setDone(`Stored ${s.name}.`);
      list.reload();
    } catch (x) {
      setErrors(formErrors(x, "", ["name", "value"]));
    }
  };
  return (
    <section>
      <PageHead title="Secrets" />
      <p className="muted">Agents name a secret as their LLM API key (llm.api_key_secret). Values are stored encrypted and never shown again.</p>
      <form className="form narrow" onSubmit={(e) => void submit(e)} noValidate aria-label="Set a secret">
        {errors.form && (
          <div className="error-note" role="alert">
            {errors.form}
          </div>
        )}
        {done && (
          <p className="ok" role="status">
            {done}
          </p>
        )}
        <Field label="Name" error={errors.fields.name} hint="[A-Za-z0-9_.-], up to 128; an existing name gets the new value.">
          {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <Field label="Value" error={errors.fields.value}>
          {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} type="password" autoComplete="new-password" value={value} onChange={(e) => setValue(e.target.value)} />}
        </Field>
        <button type="submit" className="primary">
          Save secret
        </button>
      </form>
      <ErrorNote error={list.error ?? delError} />
      {list.loading && !list.data ? (
        <Loading what="secrets" />
      ) : (list.data ?? []).length === 0 ? (
        <Empty>No secrets.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">Secrets</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Created</th>
                <th scope="col">Value replaced</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {(list.data ?? []).map((s) => (
                <tr key={s.name}>
                  <td>{s.name}</td>
                  <td>{fmtTime(s.createTime)}</td>
                  <td>{fmtTime(s.updateTime)}</td>
                  <td>
                    <button type="button" className="danger small" onClick={() => api.system.deleteSecret({ name: s.name }).then(() => list.reload(), setDelError)}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
