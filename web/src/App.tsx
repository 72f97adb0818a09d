// The shell: sign-in gate, navigation, workspace switcher, theme, and the code-split routes.
import { lazy, Suspense, useEffect, useRef, useState } from "react";
import { BrowserRouter, Navigate, NavLink, Route, Routes, useLocation } from "react-router";
import { AuthProvider, useAuth } from "./auth/AuthContext";
import { roleName } from "./auth/roles";
import { Loading } from "./components/ui";
import { SignIn } from "./pages/SignIn";
import { applyTheme, storedTheme, type Theme } from "./theme";

const Agents = lazy(() => import("./pages/Agents"));
const AgentDetail = lazy(() => import("./pages/AgentDetail"));
const Tasks = lazy(() => import("./pages/Tasks"));
const TaskDetail = lazy(() => import("./pages/TaskDetail"));
const Workflows = lazy(() => import("./pages/Workflows"));
const Builder = lazy(() => import("./pages/Builder"));
const Versions = lazy(() => import("./pages/Versions"));
const Runs = lazy(() => import("./pages/Runs"));
const RunView = lazy(() => import("./pages/RunView"));
const Analytics = lazy(() => import("./pages/Analytics"));
const System = lazy(() => import("./pages/System"));
const Audit = lazy(() => import("./pages/Audit"));
const ApiKeys = lazy(() => import("./pages/ApiKeys"));
const Secrets = lazy(() => import("./pages/Secrets"));

export function App() {
  return (
    <AuthProvider>
      <BrowserRouter>
        <Gate />
      </BrowserRouter>
    </AuthProvider>
  );
}

function Gate() {
  const auth = useAuth();
  if (auth.status === "loading") return <Loading what="AGENTZ" />;
  if (auth.status === "signedOut") return <SignIn />;
  return <Shell />;
}

function WorkspaceSwitcher() {
  const auth = useAuth();
  const orgRef = useRef<HTMLDivElement>(null);
  const clerk = auth.clerk;
  useEffect(() => {
    const el = orgRef.current;
    if (!clerk || !el || auth.creds.active !== "clerk") return;
    clerk.mountOrganizationSwitcher(el, { hidePersonal: false });
    return () => clerk.unmountOrganizationSwitcher(el);
  }, [clerk, auth.creds.active]);
  const options = auth.creds.credentials.map((c) => ({
    id: c.id,
    label: `${c.workspaceId ? c.workspaceId.slice(0, 8) : "unchecked"} · ${roleName(c.role)} · ${c.source}`,
  }));
  return (
    <div className="switcher">
      <label htmlFor="workspace">Workspace</label>
      <select id="workspace" value={auth.creds.active ?? ""} onChange={(e) => void auth.switchTo(e.target.value)}>
        {auth.clerk?.session && <option value="clerk">Clerk: {auth.clerk.organization?.name ?? "personal workspace"}</option>}
        {options.map((o) => (
          <option key={o.id} value={o.id}>
            {o.label}
          </option>
        ))}
      </select>
      {auth.creds.active === "clerk" && <div ref={orgRef} className="org-switcher" />}
    </div>
  );
}

function ThemeToggle() {
  const [t, setT] = useState<Theme>(storedTheme());
  return (
    <div className="switcher">
      <label htmlFor="theme">Theme</label>
      <select
        id="theme"
        value={t}
        onChange={(e) => {
          const v = e.target.value as Theme;
          setT(v);
          applyTheme(v);
        }}
      >
        <option value="system">System</option>
        <option value="light">Light</option>
        <option value="dark">Dark</option>
      </select>
    </div>
  );
}

/** Moves focus to the page title after navigation, so screen readers announce the new page. */
function FocusOnNavigate() {
  const loc = useLocation();
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const t = setTimeout(() => document.getElementById("page-title")?.focus(), 50);
    return () => clearTimeout(t);
  }, [loc.pathname]);
  return null;
}

function Shell() {
  const auth = useAuth();
  const [menu, setMenu] = useState(false);
  const loc = useLocation();
  useEffect(() => setMenu(false), [loc.pathname]);
  const links: [string, string, boolean][] = [
    ["/agents", "Agents", true],
    ["/tasks", "Tasks", true],
    ["/workflows", "Workflows", true],
    ["/runs", "Runs", true],
    ["/analytics", "Analytics", true],
    ["/system", "System", true],
    ["/secrets", "Secrets", auth.can("secrets")],
    ["/keys", "API keys", auth.can("apiKeys")],
    ["/audit", "Audit log", auth.can("audit")],
  ];
  return (
    <div className="app">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <div className="brand">AGENTZ</div>
        <button type="button" className="menu-button" aria-expanded={menu} aria-controls="nav" onClick={() => setMenu((m) => !m)}>
          Menu
        </button>
        <nav id="nav" className={menu ? "open" : ""} aria-label="Main">
          {links
            .filter(([, , show]) => show)
            .map(([to, label]) => (
              <NavLink key={to} to={to}>
                {label}
              </NavLink>
            ))}
        </nav>
        <div className="top-right">
          <WorkspaceSwitcher />
          <span className="role-pill" title={auth.who?.principal}>
            {roleName(auth.who?.role)}
          </span>
          <ThemeToggle />
          <button type="button" className="ghost" onClick={() => void auth.signOut()}>
            Sign out
          </button>
        </div>
      </header>
      {auth.problem && (
        <div className="error-note banner" role="alert">
          {auth.problem}
        </div>
      )}
      <FocusOnNavigate />
      <main id="main" key={auth.epoch}>
        <Suspense fallback={<Loading what="the page" />}>
          <Routes>
            <Route path="/" element={<Navigate to="/agents" replace />} />
            <Route path="/agents" element={<Agents />} />
            <Route path="/agents/new" element={<AgentDetail />} />
            <Route path="/agents/:id" element={<AgentDetail />} />
            <Route path="/tasks" element={<Tasks />} />
            <Route path="/tasks/:id" element={<TaskDetail />} />
            <Route path="/workflows" element={<Workflows />} />
            <Route path="/workflows/new" element={<Builder />} />
            <Route path="/workflows/:id" element={<Builder />} />
            <Route path="/workflows/:id/versions" element={<Versions />} />
            <Route path="/runs" element={<Runs />} />
            <Route path="/runs/:id" element={<RunView />} />
            <Route path="/analytics" element={<Analytics />} />
            <Route path="/system" element={<System />} />
            <Route path="/secrets" element={<Secrets />} />
            <Route path="/keys" element={<ApiKeys />} />
            <Route path="/audit" element={<Audit />} />
            <Route path="*" element={<NotFound />} />
          </Routes>
        </Suspense>
      </main>
    </div>
  );
}

function NotFound() {
  return (
    <section>
      <h1 id="page-title" tabIndex={-1}>
        Not found
      </h1>
      <p>
        There is no page at this address. <NavLink to="/agents">Go to the agents</NavLink>.
      </p>
    </section>
  );
}
