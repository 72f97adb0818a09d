// Who is signed in: the active credential (a saved API key, or a Clerk session), what WhoAmI
// says about it (workspace, role), and the actions of the sign-in screen and workspace switcher.
import { Code, ConnectError } from "@connectrpc/connect";
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { apiFor, setTokenSource, setUnauthenticatedHandler, api } from "../api/client";
import { describeError } from "../api/errors";
import type { WhoAmIResponse } from "../gen/agentz/v1/system_pb";
import { clerkToken, loadClerk, type ClerkInstance } from "./clerk";
import { fetchUiConfig, type UiConfig } from "./config";
import {
  activeCredential,
  addCredential,
  consumeTokenFragment,
  describeCredential,
  loadCredentials,
  removeCredential,
  saveCredentials,
  type CredentialState,
} from "./credentials";
import { can, type Permission } from "./roles";

export type AuthStatus = "loading" | "signedOut" | "signedIn";

export interface Auth {
  status: AuthStatus;
  config: UiConfig | null;
  who: WhoAmIResponse | null;
  creds: CredentialState;
  clerk: ClerkInstance | null;
  /** Why the last sign-in failed or the credential stopped working. */
  problem: string | null;
  /** Changes whenever the workspace or credential changes; screens are keyed by it. */
  epoch: number;
  can: (p: Permission) => boolean;
  signInWithKey: (token: string, source?: string) => Promise<boolean>;
  switchTo: (id: string) => Promise<void>;
  forget: (id: string) => void;
  signOut: () => Promise<void>;
}

const AuthCtx = createContext<Auth | null>(null);

export function useAuth(): Auth {
  const a = useContext(AuthCtx);
  if (!a) throw new Error("useAuth outside AuthProvider");
  return a;
}

export function useCan(p: Permission): boolean {
  return useAuth().can(p);
}

const newId = () => crypto.randomUUID();

/** How long a saved Clerk session waits for Clerk to load before the sign-in screen shows. */
const CLERK_WAIT_MS = 10_000;

export function AuthProvider({ children }: { children: ReactNode }) {
  const [creds, setCreds] = useState<CredentialState>(() => {
    const s = consumeTokenFragment(window.location, window.history, loadCredentials(localStorage), Date.now(), newId);
    saveCredentials(localStorage, s);
    return s;
  });
  const [config, setConfig] = useState<UiConfig | null>(null);
  const [clerk, setClerk] = useState<ClerkInstance | null>(null);
  const [who, setWho] = useState<WhoAmIResponse | null>(null);
  const [status, setStatus] = useState<AuthStatus>("loading");
  const [problem, setProblem] = useState<string | null>(null);
  const [epoch, setEpoch] = useState(0);
  const credsRef = useRef(creds);
  credsRef.current = creds;
  const clerkRef = useRef<ClerkInstance | null>(null);

  const persist = useCallback((s: CredentialState) => {
    saveCredentials(localStorage, s);
    setCreds(s);
  }, []);

  /** Points the API at the active credential and asks the server who that is. */
  const activate = useCallback(
    async (s: CredentialState): Promise<boolean> => {
      const active = activeCredential(s);
      if (s.active === "clerk" && clerkRef.current) {
        const c = clerkRef.current;
        setTokenSource(() => clerkToken(c));
      } else if (active) {
        setTokenSource(async () => active.token);
      } else {
        setTokenSource(async () => null);
        setWho(null);
        setStatus("signedOut");
        return false;
      }
      try {
        const w = await api.system.whoAmI({});
        setWho(w);
        setProblem(null);
        if (active && s.active !== "clerk") persist(describeCredential(s, active.id, { workspaceId: w.workspaceId, role: w.role, principal: w.principal }));
        setStatus("signedIn");
        setEpoch((e) => e + 1);
        return true;
      } catch (e) {
        setProblem(describeError(e));
        setWho(null);
        setStatus("signedOut");
        return false;
      }
    },
    [persist],
  );

  useEffect(() => {
    setUnauthenticatedHandler((e: ConnectError) => {
      setProblem(`Your credential was refused: ${e.rawMessage}`);
      setStatus("signedOut");
    });
    let cancelled = false;
    /** Loads Clerk beside everything else: the app never waits on it unless a Clerk session
     * is the credential to restore, and then only CLERK_WAIT_MS. */
    const attachClerk = async (publishableKey: string): Promise<boolean> => {
      try {
        const c = await loadClerk(publishableKey);
        if (cancelled) return false;
        clerkRef.current = c;
        setClerk(c);
        // Signing in, out, or switching organization (= workspace) re-reads who we are.
        let lastOrg = c.organization?.id ?? null;
        let lastSession = c.session?.id ?? null;
        c.addListener(({ session, organization }) => {
          const org = organization?.id ?? null;
          const sid = session?.id ?? null;
          if (org === lastOrg && sid === lastSession) return;
          lastOrg = org;
          lastSession = sid;
          if (sid) {
            const next = { ...credsRef.current, active: "clerk" };
            persist(next);
            void activate(next);
          } else if (credsRef.current.active === "clerk") {
            const next = { ...credsRef.current, active: null };
            persist(next);
            void activate(next);
          }
        });
        // Signed in with Clerk already (another tab) while this one showed the sign-in screen.
        if (c.session && credsRef.current.active === null) {
          const next = { ...credsRef.current, active: "clerk" };
          persist(next);
          void activate(next);
        }
        return true;
      } catch (e) {
        if (!cancelled) setProblem(`Clerk could not be loaded: ${e instanceof Error ? e.message : String(e)}`);
        return false;
      }
    };
    (async () => {
      const cfg = await fetchUiConfig();
      if (cancelled) return;
      setConfig(cfg);
      let s = credsRef.current;
      const clerkLoaded = cfg.clerkPublishableKey ? attachClerk(cfg.clerkPublishableKey) : null;
      if (s.active === "clerk" && clerkLoaded) {
        const loaded = await Promise.race([clerkLoaded, new Promise<false>((r) => setTimeout(() => r(false), CLERK_WAIT_MS))]);
        if (cancelled) return;
        if (!loaded && !clerkRef.current) setProblem(`Clerk did not load within ${CLERK_WAIT_MS / 1000} s; sign in with an API key, or reload to try again.`);
        if (clerkRef.current && !clerkRef.current.session) s = { ...s, active: null };
      }
      if (s.active === "clerk" && !clerkRef.current) s = { ...s, active: null };
      persist(s);
      await activate(s);
    })();
    return () => {
      cancelled = true;
    };
  }, [activate, persist]);

  // A "#token=" opened in a tab that already runs the app changes only the fragment: no reload,
  // so take the key from it here too (and strip it from the address bar, as at load).
  useEffect(() => {
    const onHash = () => {
      if (!/[#&]token=/.test(window.location.hash)) return;
      const s = consumeTokenFragment(window.location, window.history, credsRef.current, Date.now(), newId);
      persist(s);
      void activate(s);
    };
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, [activate, persist]);

  const signInWithKey = useCallback(
    async (token: string, source = "pasted key") => {
      const t = token.trim();
      if (!t) {
        setProblem("Paste an API key first.");
        return false;
      }
      try {
        await apiFor(t).system.whoAmI({});
      } catch (e) {
        const ce = ConnectError.from(e);
        setProblem(ce.code === Code.Unauthenticated ? `The key was refused: ${ce.rawMessage}` : describeError(e));
        return false;
      }
      const s = addCredential(credsRef.current, t, source, Date.now(), newId);
      persist(s);
      return activate(s);
    },
    [activate, persist],
  );

  const switchTo = useCallback(
    async (id: string) => {
      const s = { ...credsRef.current, active: id };
      persist(s);
      await activate(s);
    },
    [activate, persist],
  );

  const forget = useCallback(
    (id: string) => {
      const s = removeCredential(credsRef.current, id);
      persist(s);
      if (credsRef.current.active === id) void activate(s);
    },
    [activate, persist],
  );

  const signOut = useCallback(async () => {
    if (credsRef.current.active === "clerk" && clerkRef.current) await clerkRef.current.signOut();
    const s = { ...credsRef.current, active: null };
    persist(s);
    setProblem(null);
    await activate(s);
  }, [activate, persist]);

  const value = useMemo<Auth>(
    () => ({
      status,
      config,
      who,
      creds,
      clerk,
      problem,
      epoch,
      can: (p) => can(who?.role, p),
      signInWithKey,
      switchTo,
      forget,
      signOut,
    }),
    [status, config, who, creds, clerk, problem, epoch, signInWithKey, switchTo, forget, signOut],
  );
  return <AuthCtx.Provider value={value}>{children}</AuthCtx.Provider>;
}
