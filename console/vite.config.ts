import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// `npm run dev` serves the console with hot reload and sends API calls, /metrics and
// /healthz to a running node's HTTP side (SUPERVISOR_HTTP, default 127.0.0.1:50052).
const node = process.env.SUPERVISOR_HTTP ?? "http://127.0.0.1:50052";

export default defineConfig({
  plugins: [svelte()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    // One small bundle: the node embeds it, so fewer files means fewer lookups.
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      "^/supervisor\\.v1\\.": node,
      "/metrics": node,
      "/healthz": node,
    },
  },
});
