import { describe, expect, it } from "vitest";
import { Role } from "../gen/agentz/v1/system_pb";
import { can, grantableRoles, roleName } from "./roles";

describe("role gating", () => {
  it("follows the permission table of docs/security.md", () => {
    const table: [Role, boolean, boolean, boolean, boolean][] = [
      // role, read, write, secrets, apiKeys/audit
      [Role.VIEWER, true, false, false, false],
      [Role.EDITOR, true, true, true, false],
      [Role.ADMIN, true, true, true, true],
      [Role.OWNER, true, true, true, true],
      [Role.UNSPECIFIED, false, false, false, false],
    ];
    for (const [r, read, write, secrets, admin] of table) {
      expect([can(r, "read"), can(r, "write"), can(r, "secrets"), can(r, "apiKeys"), can(r, "audit")], roleName(r)).toEqual([read, write, secrets, admin, admin]);
    }
    expect(can(undefined, "read")).toBe(false);
  });

  it("no one grants a role above their own", () => {
    expect(grantableRoles(Role.ADMIN)).toEqual([Role.VIEWER, Role.EDITOR, Role.ADMIN]);
    expect(grantableRoles(Role.OWNER)).toContain(Role.OWNER);
    expect(grantableRoles(Role.EDITOR)).toEqual([]);
  });
});
