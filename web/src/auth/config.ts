// GET /ui/config.json from the gateway: {"version":"0.1.0","clerkPublishableKey":"pk_..." | null}.
export interface UiConfig {
  version: string;
  clerkPublishableKey: string | null;
}

export async function fetchUiConfig(): Promise<UiConfig> {
  try {
    const r = await fetch("/ui/config.json", { headers: { accept: "application/json" }, cache: "no-store" });
    if (!r.ok) return { version: "", clerkPublishableKey: null };
    const v = (await r.json()) as Partial<UiConfig>;
    return { version: typeof v.version === "string" ? v.version : "", clerkPublishableKey: typeof v.clerkPublishableKey === "string" && v.clerkPublishableKey ? v.clerkPublishableKey : null };
  } catch {
    return { version: "", clerkPublishableKey: null };
  }
}
