// Saved credentials (API keys and the local admin key): one credential = one workspace + one
// role. Kept in localStorage so a reload stays signed in; the workspace switcher lists them.
// Pure functions over an injected Storage and Location/History so they are unit tested.

export interface SavedCredential {
  /** Local identifier of the entry (not the server's key id). */
  id: string;
  /** The bearer token: an API key. Clerk sessions are not stored here. */
  token: string;
  /** Filled from WhoAmI once the server accepted the token. */
  workspaceId?: string;
  role?: number;
  principal?: string;
  /** How the credential came in, for the switcher: "local admin key", "pasted key", … */
  source: string;
  addedAt: number;
}

export interface CredentialState {
  credentials: SavedCredential[];
  /** Id of the credential in use; "clerk" while a Clerk session is; null when signed out. */
  active: string | null;
}

const KEY = "agentz.credentials.v1";

export function loadCredentials(storage: Pick<Storage, "getItem">): CredentialState {
  const raw = storage.getItem(KEY);
  if (!raw) return { credentials: [], active: null };
  try {
    const v = JSON.parse(raw) as Partial<CredentialState>;
    const credentials = Array.isArray(v.credentials)
      ? v.credentials.filter(
          (c): c is SavedCredential => !!c && typeof c.token === "string" && typeof c.id === "string",
        )
      : [];
    const active =
      v.active === "clerk" || credentials.some((c) => c.id === v.active) ? (v.active ?? null) : null;
    return { credentials, active };
  } catch {
    return { credentials: [], active: null };
  }
}

export function saveCredentials(storage: Pick<Storage, "setItem">, s: CredentialState): void {
  storage.setItem(KEY, JSON.stringify(s));
}

/** Adds token (or reuses the entry that has it) and makes it active. */
export function addCredential(
  s: CredentialState,
  token: string,
  source: string,
  now: number,
  newId: () => string,
): CredentialState {
  const t = token.trim();
  const have = s.credentials.find((c) => c.token === t);
  if (have) return { ...s, active: have.id };
  const c: SavedCredential = { id: newId(), token: t, source, addedAt: now };
  return { credentials: [...s.credentials, c], active: c.id };
}

export function removeCredential(s: CredentialState, id: string): CredentialState {
  const credentials = s.credentials.filter((c) => c.id !== id);
  return { credentials, active: s.active === id ? null : s.active };
}

/** Records what WhoAmI said about a credential. */
export function describeCredential(
  s: CredentialState,
  id: string,
  who: { workspaceId: string; role: number; principal: string },
): CredentialState {
  return {
    ...s,
    credentials: s.credentials.map((c) => (c.id === id ? { ...c, ...who } : c)),
  };
}

export function activeCredential(s: CredentialState): SavedCredential | null {
  return s.credentials.find((c) => c.id === s.active) ?? null;
}

/**
 * The token in a "#token=..." fragment (agentzd prints `web UI: http://HOST:PORT/#token=KEY`),
 * and the fragment that remains without it. Other fragment parameters are kept.
 */
export function tokenFromFragment(hash: string): { token: string | null; rest: string } {
  const h = hash.startsWith("#") ? hash.slice(1) : hash;
  if (!h) return { token: null, rest: "" };
  const params = new URLSearchParams(h);
  const token = params.get("token");
  if (token === null) return { token: null, rest: hash };
  params.delete("token");
  const rest = params.toString();
  return { token: token.trim() || null, rest: rest ? `#${rest}` : "" };
}

/**
 * Takes a #token= fragment from the address, stores it as the active credential and strips it
 * from the URL (history.replaceState), so the key is neither bookmarked nor sent as a Referer.
 * Returns the new state, or the old one when there was no token.
 */
export function consumeTokenFragment(
  loc: Pick<Location, "hash" | "pathname" | "search">,
  history: Pick<History, "replaceState" | "state">,
  s: CredentialState,
  now: number,
  newId: () => string,
): CredentialState {
  const { token, rest } = tokenFromFragment(loc.hash);
  if (loc.hash && new URLSearchParams(loc.hash.slice(1)).has("token")) {
    history.replaceState(history.state, "", `${loc.pathname}${loc.search}${rest}`);
  }
  if (!token) return s;
  return addCredential(s, token, "local admin key", now, newId);
}
