import { defineConfig } from "vitest/config";

// Unit tests cover pure logic only (no DOM, no server): src/**/*.test.ts.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
    reporters: ["default"],
  },
});
