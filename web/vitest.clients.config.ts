import { defineConfig } from "vitest/config";

// npm's Connect clients against the real gateway (e2e/clients/): needs the C build
// (build/bin/agentzd, agentz-fakellm) and starts its own stack. Run by `npm run test:clients`.
export default defineConfig({
  test: {
    include: ["e2e/clients/**/*.test.ts"],
    environment: "node",
    reporters: ["default"],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
});
