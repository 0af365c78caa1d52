// Shared by the console's browser tests: the real `thingmq serve` on free ports (a users file
// made by `thingmq console-user`, an admin API key for `thingmq simulate`), Debian's chromium,
// bounded waits. Not a test file itself (node --test runs only *.test.mjs from this directory).

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const bin = process.env.THINGMQ_BIN ?? path.join(root, 'target/debug/thingmq');
export const browserPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const PASSWORD = 'console-e2e-password';
/** The MQTT user of the WebSocket listener with `wsAuth` (password file made by `thingmq passwd`). */
export const MQTT_USER = 'console';
export const MQTT_PASSWORD = 'mqtt-e2e-password';

/** Where screenshots go: docs/screenshots/ with UPDATE_SCREENSHOTS=1, else a temp dir. */
export function screenshotDir() {
  const dir = process.env.UPDATE_SCREENSHOTS === '1'
    ? path.join(root, 'docs/screenshots')
    : fs.mkdtempSync(path.join(os.tmpdir(), 'thingmq-screenshots-'));
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

export async function until(what, f, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts `thingmq serve` in `dir` (MQTT on TCP and, unless `ws` is false, WebSocket; HTTP with console users
 * `admin` and `watcher`, and an admin API key). With `wsAuth` the WebSocket listener refuses
 * anonymous clients and knows `MQTT_USER`; `callTimeoutMs` sets `[things] call_timeout_ms`.
 * Resolves with the process, the addresses of the ready file and the key.
 */
export async function startServer(dir, { ws = true, wsAuth = false, callTimeoutMs } = {}) {
  for (const [name, role] of [['admin', 'admin'], ['watcher', 'viewer']]) {
    execFileSync(bin, ['console-user', '--file', path.join(dir, 'users'), 'add', name, '--role', role, '--stdin'], {
      input: `${PASSWORD}\n`,
    });
  }
  const apiKey = execFileSync(bin, ['api-key', '--file', path.join(dir, 'keys'), 'e2e', '--role', 'admin'], { stdio: ['ignore', 'pipe', 'ignore'] })
    .toString()
    .trim();
  let wsAuthLines = '';
  if (wsAuth) {
    const file = path.join(dir, 'mqtt-passwords');
    execFileSync(bin, ['passwd', '-c', '--stdin', file, MQTT_USER], { input: `${MQTT_PASSWORD}\n`, stdio: ['pipe', 'ignore', 'ignore'] });
    wsAuthLines = `allow_anonymous = false\npassword_file = "${file}"\n`;
  }
  const wsListener = ws ? `
[[listeners]]
bind = "127.0.0.1:0"
protocol = "ws"
path = "/mqtt"
${wsAuthLines}` : '';
  const things = callTimeoutMs ? `\n[things]\ncall_timeout_ms = ${callTimeoutMs}\n` : '';
  const config = `
[[listeners]]
bind = "127.0.0.1:0"
${wsListener}
[http]
bind = "127.0.0.1:0"
users_file = "${path.join(dir, 'users')}"
api_keys_file = "${path.join(dir, 'keys')}"

[sys]
interval_secs = 1
${things}`;
  fs.writeFileSync(path.join(dir, 'thingmq.toml'), config);
  const ready = path.join(dir, 'ready.json');
  const log = fs.openSync(path.join(dir, 'server.log'), 'w');
  const proc = spawn(bin, ['serve', '-c', path.join(dir, 'thingmq.toml'), '--ready-file', ready], {
    stdio: ['ignore', log, log],
  });
  try {
    const addrs = await until('the ready file', () => {
      if (proc.exitCode !== null) throw new Error(`server exited: ${fs.readFileSync(path.join(dir, 'server.log'), 'utf8')}`);
      try {
        return JSON.parse(fs.readFileSync(ready, 'utf8'));
      } catch {
        return null;
      }
    });
    return { proc, addrs, apiKey };
  } catch (e) {
    await stopProcess(proc);
    throw e;
  }
}

/** SIGTERM, then SIGKILL after 5 s. */
export async function stopProcess(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export function launchBrowser(dir) {
  return chromium.launchPersistentContext(path.join(dir, 'profile'), {
    executablePath: browserPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 800 },
  });
}

/** Collects page errors and console errors of `page` into `errors`; accepts dialogs. */
export function watchPage(page, errors) {
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => void d.accept());
}

/** Chromium logs every 401 answer as a failed resource (the "who am I" before signing in). */
export const EXPECTED_401 = 'console: Failed to load resource: the server responded with a status of 401 (Unauthorized)';

export async function signIn(page, base, user = 'admin') {
  await page.goto(`${base}/`);
  await page.getByLabel('User name').waitFor();
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
}
