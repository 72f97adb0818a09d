import { describe, expect, it } from "vitest";
import { activeCredential, addCredential, consumeTokenFragment, describeCredential, loadCredentials, removeCredential, saveCredentials, tokenFromFragment, type CredentialState } from "./credentials";

class MemStorage {
  data = new Map<string, string>();
  getItem(k: string) {
    return this.data.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.data.set(k, v);
  }
}

let n = 0;
const id = () => `c${++n}`;
const empty: CredentialState = { credentials: [], active: null };

describe("#token= fragment", () => {
  it("takes the token and keeps the rest of the fragment", () => {
    expect(tokenFromFragment("#token=agz_abc")).toEqual({ token: "agz_abc", rest: "" });
    expect(tokenFromFragment("#x=1&token=agz_abc")).toEqual({ token: "agz_abc", rest: "#x=1" });
    expect(tokenFromFragment("#/runs/1")).toEqual({ token: null, rest: "#/runs/1" });
    expect(tokenFromFragment("")).toEqual({ token: null, rest: "" });
  });

  it("stores the token, makes it active and strips it from the URL", () => {
    const calls: string[] = [];
    const history = { state: null, replaceState: (_s: unknown, _t: string, url?: string | URL | null) => void calls.push(String(url)) };
    const s = consumeTokenFragment({ hash: "#token=agz_local", pathname: "/runs/r1", search: "?a=1" }, history, empty, 1, id);
    expect(calls).toEqual(["/runs/r1?a=1"]);
    expect(activeCredential(s)?.token).toBe("agz_local");
    expect(activeCredential(s)?.source).toBe("local admin key");
    // no fragment: nothing changes, the URL is left alone
    const same = consumeTokenFragment({ hash: "", pathname: "/", search: "" }, history, s, 2, id);
    expect(same).toBe(s);
    expect(calls).toHaveLength(1);
  });
});

describe("saved credentials", () => {
  it("adds, dedupes by token, describes, removes and persists", () => {
    let s = addCredential(empty, " agz_one ", "pasted key", 1, id);
    const first = s.active;
    s = addCredential(s, "agz_two", "pasted key", 2, id);
    expect(s.credentials).toHaveLength(2);
    s = addCredential(s, "agz_one", "pasted key", 3, id);
    expect(s.credentials).toHaveLength(2);
    expect(s.active).toBe(first);
    s = describeCredential(s, first!, { workspaceId: "ws1", role: 3, principal: "key:1" });
    expect(activeCredential(s)?.workspaceId).toBe("ws1");
    const st = new MemStorage();
    saveCredentials(st, s);
    expect(loadCredentials(st)).toEqual(s);
    s = removeCredential(s, first!);
    expect(s.active).toBeNull();
    expect(s.credentials.map((c) => c.token)).toEqual(["agz_two"]);
  });

  it("survives garbage in storage", () => {
    const st = new MemStorage();
    st.setItem("agentz.credentials.v1", "{not json");
    expect(loadCredentials(st)).toEqual(empty);
    st.setItem("agentz.credentials.v1", JSON.stringify({ credentials: [{ id: 1 }], active: "zz" }));
    expect(loadCredentials(st)).toEqual(empty);
  });
});
