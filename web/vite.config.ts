import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The gateway serves dist/ at / with a strict CSP (no inline scripts, no eval): Vite's output is
// one module script plus hashed chunks under /assets/, which fits. `npm run dev` proxies the API
// to a running gateway (AGENTZ_GATEWAY, default http://127.0.0.1:8080).
const gateway = process.env.AGENTZ_GATEWAY ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    target: "es2022",
    manifest: true,
    sourcemap: false,
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 2000,
  },
  server: {
    proxy: {
      "^/(agentz\\.v1\\.[A-Za-z]+Service|grpc\\.)/": { target: gateway, changeOrigin: false },
      "/ui/config.json": { target: gateway },
      "/v1/": { target: gateway },
    },
  },
});
