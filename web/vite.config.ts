import { defineConfig } from 'vite';

// `npm run dev` proxies the API to a local `thingmq serve` (default port 8080).
export default defineConfig({
  build: { target: 'es2022', sourcemap: false, chunkSizeWarningLimit: 600 },
  server: { proxy: { '/api': 'http://127.0.0.1:8080', '/metrics': 'http://127.0.0.1:8080' } },
});
