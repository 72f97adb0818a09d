// What each role may do, from docs/security.md "Roles and permissions" (server/auth/perm.c).
// The UI hides or disables what the role cannot do; the server refuses it anyway.
import { Role } from "../gen/agentz/v1/system_pb";

export type Permission =
  | "read" // Get, List, Watch, Stream, stats, analytics, WhoAmI
  | "write" // create, update, delete, run, cancel, retry, resume, templates, clear memory
  | "secrets" // CreateSecret, ListSecrets, DeleteSecret
  | "apiKeys" // CreateApiKey, ListApiKeys, RevokeApiKey
  | "audit"; // ListAuditLog

const LEAST: Record<Permission, Role> = {
  read: Role.VIEWER,
  write: Role.EDITOR,
  secrets: Role.EDITOR,
  apiKeys: Role.ADMIN,
  audit: Role.ADMIN,
};

/** Whether a principal with role may do p. ROLE_UNSPECIFIED may do nothing. */
export function can(role: Role | undefined, p: Permission): boolean {
  if (role === undefined || role === Role.UNSPECIFIED) return false;
  return role >= LEAST[p];
}

/** The roles an API key created by role may have: none above the creator's own. */
export function grantableRoles(role: Role | undefined): Role[] {
  if (!can(role, "apiKeys")) return [];
  return [Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OWNER].filter((r) => r <= role!);
}

export function roleName(role: Role | undefined): string {
  switch (role) {
    case Role.VIEWER:
      return "viewer";
    case Role.EDITOR:
      return "editor";
    case Role.ADMIN:
      return "admin";
    case Role.OWNER:
      return "owner";
    default:
      return "no role";
  }
}
