// API keys (admins): list, create (the key is shown once), revoke.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useState, type FormEvent } from "react";
import { api, requestId } from "../api/client";
import { formErrors, noErrors, type FormErrors } from "../api/errors";
import { useLoad } from "../api/hooks";
import { useAuth } from "../auth/AuthContext";
import { grantableRoles, roleName } from "../auth/roles";
import { Role } from "../gen/agentz/v1/system_pb";
import { fmtTime } from "../lib/format";
import { Dialog, Empty, ErrorNote, Field, Loading, PageHead } from "../components/ui";

export default function ApiKeys() {
  const auth = useAuth();
  const list = useLoad(async () => (await api.system.listApiKeys({ pageSize: 1000 })).apiKeys, []);
  const [creating, setCreating] = useState(false);
  const [revokeError, setRevokeError] = useState<unknown>(null);
  if (!auth.can("apiKeys")) return <ErrorNote error="API keys need the admin role." />;
  return (
    <section>
      <PageHead title="API keys">
        <button type="button" className="primary" onClick={() => setCreating(true)}>
          New key
        </button>
      </PageHead>
      <ErrorNote error={list.error ?? revokeError} />
      {list.loading && !list.data ? (
        <Loading what="keys" />
      ) : (list.data ?? []).length === 0 ? (
        <Empty>No keys.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className="sr-only">API keys</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Prefix</th>
                <th scope="col">Role</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">Expires</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {(list.data ?? []).map((k) => (
                <tr key={k.id}>
                  <td>{k.name}</td>
                  <td>
                    <code>agz_{k.prefix}…</code>
                  </td>
                  <td>{roleName(k.role)}</td>
                  <td>{fmtTime(k.createTime)}</td>
                  <td>{fmtTime(k.lastUseTime)}</td>
                  <td>{k.expireTime ? fmtTime(k.expireTime) : "never"}</td>
                  <td>{k.revokeTime ? `revoked ${fmtTime(k.revokeTime)}` : "active"}</td>
                  <td>
                    {!k.revokeTime && (
                      <button
                        type="button"
                        className="danger small"
                        onClick={() =>
                          api.system.revokeApiKey({ id: k.id }).then(
                            () => list.reload(),
                            (e: unknown) => setRevokeError(e),
                          )
                        }
                      >
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Dialog open={creating} title="New API key" onClose={() => (setCreating(false), list.reload())}>
        {creating && <CreateKey role={auth.who?.role} onUse={(k) => void auth.signInWithKey(k, "created key")} />}
      </Dialog>
    </section>
  );
}

function CreateKey({ role, onUse }: { role: Role | undefined; onUse: (key: string) => void }) {
  const roles = grantableRoles(role);
  const [name, setName] = useState("");
  const [keyRole, setKeyRole] = useState<Role>(Role.VIEWER);
  const [days, setDays] = useState("");
  const [errors, setErrors] = useState<FormErrors>(noErrors);
  const [made, setMade] = useState<string | null>(null);
  const [rid] = useState(requestId);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors(noErrors);
    try {
      const d = Number(days);
      const r = await api.system.createApiKey({ name, role: keyRole, requestId: rid, expireTime: days.trim() && d > 0 ? timestampFromMs(Date.now() + d * 86400e3) : undefined });
      setMade(r.key);
    } catch (x) {
      setErrors(formErrors(x, "", ["name", "role", "expire_time"]));
    }
  };
  if (made) {
    return (
      <div className="form">
        <p>The key is shown only now; the server keeps only its hash.</p>
        <pre className="output" data-testid="new-key">
          {made}
        </pre>
        <div className="actions">
          <button type="button" onClick={() => void navigator.clipboard?.writeText(made)}>
            Copy
          </button>
          <button type="button" onClick={() => onUse(made)}>
            Sign in with it (adds it to the workspace switcher)
          </button>
        </div>
      </div>
    );
  }
  return (
    <form className="form" onSubmit={(e) => void submit(e)} noValidate>
      {errors.form && (
        <div className="error-note" role="alert">
          {errors.form}
        </div>
      )}
      <Field label="Name" error={errors.fields.name}>
        {(p) => <input id={p.id} aria-describedby={p.describedBy} aria-invalid={p.invalid} value={name} onChange={(e) => setName(e.target.value)} />}
      </Field>
      <Field label="Role" error={errors.fields.role} hint="No one can create a key above their own role.">
        {(p) => (
          <select id={p.id} aria-describedby={p.describedBy} value={keyRole} onChange={(e) => setKeyRole(Number(e.target.value) as Role)}>
            {roles.map((r) => (
              <option key={r} value={r}>
                {roleName(r)}
              </option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Expires after (days)" error={errors.fields.expire_time} hint="Empty = never.">
        {(p) => <input id={p.id} aria-describedby={p.describedBy} inputMode="numeric" value={days} onChange={(e) => setDays(e.target.value)} />}
      </Field>
      <button type="submit" className="primary">
        Create key
      </button>
    </form>
  );
}
