// Clerk, only when the gateway's /ui/config.json names a publishable key: @clerk/clerk-js is
// imported lazily (its own chunk), so API-key users never download it.
import type { Clerk as ClerkType } from "@clerk/clerk-js";

export type ClerkInstance = ClerkType;

let loading: Promise<ClerkInstance> | null = null;

export function loadClerk(publishableKey: string): Promise<ClerkInstance> {
  if (!loading) {
    loading = import("@clerk/clerk-js").then(async ({ Clerk }) => {
      const clerk = new Clerk(publishableKey);
      await clerk.load();
      return clerk;
    });
    loading.catch(() => (loading = null));
  }
  return loading;
}

/** The current session token (Clerk refreshes it before it expires), or null when signed out. */
export async function clerkToken(clerk: ClerkInstance): Promise<string | null> {
  return (await clerk.session?.getToken()) ?? null;
}
