// A real browser against thingmq: Debian's Chromium, driven headless by playwright-core,
// loads a test page (browser/index.html) that uses MQTT.js's browser bundle over ws://,
// subscribes, and shows a message that mosquitto_pub publishes over plain TCP.
//
// Everything is started here on 127.0.0.1 with port 0 — the broker (debug binary or
// $THINGMQ_BIN), a tiny HTTP server for the page, and Chromium with a fresh profile — and
// stopped in `after`, also when the test fails. scripts/test installs `chromium` and
// `mosquitto-clients` when they are missing; this test fails (it does not skip) without them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import http from 'node:http';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const bin = process.env.THINGMQ_BIN ?? join(root, 'target', 'debug', 'thingmq');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const require = createRequire(import.meta.url);
const dir = mkdtempSync(join(tmpdir(), 'thingmq-browser-'));

let broker;
let brokerLog = '';
let tcpPort;
let wsPort;
let pageServer;
let pagePort;
let browser;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Serves the test page and MQTT.js's browser bundle; nothing else.
function startPageServer() {
  const files = {
    '/': ['text/html', readFileSync(join(here, 'browser', 'index.html'))],
    '/mqtt.min.js': [
      'text/javascript',
      readFileSync(join(dirname(require.resolve('mqtt/package.json')), 'dist', 'mqtt.min.js')),
    ],
  };
  const server = http.createServer((req, res) => {
    const file = files[new URL(req.url, 'http://x').pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': file[0] }).end(file[1]);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

before(async () => {
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing (apt-get install chromium)`);
  writeFileSync(join(dir, 'thingmq.toml'), `
[[listeners]]
bind = "127.0.0.1:0"

[[listeners]]
bind = "127.0.0.1:0"
protocol = "ws"

[sys]
interval_secs = 0
`);
  const ready = join(dir, 'ready.json');
  broker = spawn(bin, ['serve', '--config', join(dir, 'thingmq.toml'), '--ready-file', ready, '--no-http', '--data-dir', join(dir, 'data')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  broker.stderr.on('data', (d) => { brokerLog += d; });
  for (let i = 0; i < 200 && !existsSync(ready); i++) {
    if (broker.exitCode !== null) break;
    await sleep(50);
  }
  assert.ok(existsSync(ready), `thingmq did not start:\n${brokerLog}`);
  const addrs = JSON.parse(readFileSync(ready, 'utf8')).mqtt;
  tcpPort = Number(addrs[0].split(':').pop());
  wsPort = Number(addrs[1].split(':').pop());

  pageServer = await startPageServer();
  pagePort = pageServer.address().port;

  // A persistent context is how playwright takes a user-data-dir: a fresh one per run, so
  // no state from an earlier run (or the user's own profile) is used.
  browser = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    timeout: 30000,
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (pageServer) {
    pageServer.closeAllConnections();
    await new Promise((resolve) => pageServer.close(resolve));
  }
  if (broker && broker.exitCode === null) {
    const exited = new Promise((resolve) => broker.once('exit', resolve));
    broker.kill('SIGTERM');
    const timer = setTimeout(() => broker.kill('SIGKILL'), 8000);
    await exited;
    clearTimeout(timer);
  }
  rmSync(dir, { recursive: true, force: true });
});

function mosquittoPub(topic, message) {
  return new Promise((resolve, reject) => {
    execFile(
      'mosquitto_pub',
      ['-h', '127.0.0.1', '-p', String(tcpPort), '-t', topic, '-m', message, '-q', '1'],
      { timeout: 10000 },
      (err, stdout, stderr) => (err ? reject(new Error(`mosquitto_pub: ${err.message} ${stderr}`)) : resolve()),
    );
  });
}

for (const [version, name] of [[5, 'MQTT 5'], [4, 'MQTT 3.1.1']]) {
  test(`Chromium page with MQTT.js (${name}) over ws:// shows a message from mosquitto_pub over TCP`, { timeout: 60000 }, async () => {
    const topic = `browser/v${version}/${Date.now()}`;
    const page = await browser.newPage();
    try {
      const url = `ws://127.0.0.1:${wsPort}/mqtt`;
      await page.goto(
        `http://127.0.0.1:${pagePort}/?url=${encodeURIComponent(url)}&topic=${encodeURIComponent(topic)}&version=${version}`,
      );
      const status = page.locator('#status');
      await status.filter({ hasText: 'subscribed qos 1' }).waitFor({ timeout: 15000 }).catch(async (e) => {
        throw new Error(`page status: ${await status.textContent()}; ${e.message}\n${brokerLog}`);
      });
      const text = `hello browser from mosquitto_pub (v${version})`;
      await mosquittoPub(topic, text);
      const item = page.locator('#messages li');
      await item.first().waitFor({ timeout: 10000 });
      assert.equal(await item.count(), 1);
      assert.equal(await item.first().textContent(), `${topic}: ${text}`);
      if (process.env.BROWSER_SCREENSHOT) await page.screenshot({ path: process.env.BROWSER_SCREENSHOT });
    } finally {
      await page.close();
    }
  });
}
