// The sign-in screen: Clerk (when the gateway is configured with a publishable key), or an API
// key pasted here. The embedded default's local admin key arrives as #token= in the URL agentzd
// prints, and never needs this screen.
import { useEffect, useRef, useState, type FormEvent } from "react";
import { useAuth } from "../auth/AuthContext";
import { roleName } from "../auth/roles";
import { Field } from "../components/ui";

export function SignIn() {
  const auth = useAuth();
  const [key, setKey] = useState("");
  const [busy, setBusy] = useState(false);
  const clerkRef = useRef<HTMLDivElement>(null);
  const clerk = auth.clerk;
  useEffect(() => {
    document.title = "Sign in · AGENTZ";
    const el = clerkRef.current;
    if (!clerk || !el) return;
    clerk.mountSignIn(el, {});
    return () => clerk.unmountSignIn(el);
  }, [clerk]);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    const ok = await auth.signInWithKey(key);
    setBusy(false);
    if (ok) setKey("");
  };
  return (
    <main className="signin" id="main">
      <h1>Sign in to AGENTZ</h1>
      {auth.problem && (
        <div className="error-note" role="alert">
          {auth.problem}
        </div>
      )}
      {auth.config?.clerkPublishableKey && (
        <section aria-labelledby="clerk-h">
          <h2 id="clerk-h">With your account</h2>
          {!clerk && <p className="muted">Loading Clerk…</p>}
          <div ref={clerkRef} />
        </section>
      )}
      <section aria-labelledby="key-h">
        <h2 id="key-h">With an API key</h2>
        <p className="muted">
          A local server prints <code>web UI: http://127.0.0.1:8080/#token=…</code> at start: open that address to sign in with its local admin key. Otherwise paste a key
          made with <code>agentzd admin create-key</code> or on the API keys page.
        </p>
        <form onSubmit={(e) => void submit(e)} noValidate>
          <Field label="API key">
            {({ id, describedBy }) => (
              <input id={id} aria-describedby={describedBy} type="password" autoComplete="off" spellCheck={false} value={key} onChange={(e) => setKey(e.target.value)} placeholder="agz_…" />
            )}
          </Field>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Checking…" : "Sign in"}
          </button>
        </form>
      </section>
      {auth.creds.credentials.length > 0 && (
        <section aria-labelledby="saved-h">
          <h2 id="saved-h">Saved workspaces</h2>
          <ul className="plain">
            {auth.creds.credentials.map((c) => (
              <li key={c.id} className="row">
                <span>
                  {c.workspaceId ?? "workspace not checked yet"} · {roleName(c.role)} · {c.source}
                </span>
                <span className="actions">
                  <button type="button" onClick={() => void auth.switchTo(c.id)}>
                    Use
                  </button>
                  <button type="button" className="ghost" onClick={() => auth.forget(c.id)}>
                    Forget
                  </button>
                </span>
              </li>
            ))}
          </ul>
        </section>
      )}
    </main>
  );
}
