// MQTT.js 5 — the client most browser apps use — against thingmq's ws:// and wss://
// listeners. One broker (the debug binary, or $THINGMQ_BIN) is started for the file with a
// config of two port-0 listeners and a self-signed certificate made here with the openssl
// CLI; it is stopped in `after`, also when a test fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = process.env.THINGMQ_BIN ?? join(root, 'target', 'debug', 'thingmq');
const dir = mkdtempSync(join(tmpdir(), 'thingmq-ws-'));
let broker;
let wsPort;
let wssPort;
let caPem;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

before(async () => {
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  caPem = readFileSync(join(dir, 'cert.pem'));
  writeFileSync(join(dir, 'thingmq.toml'), `
[[listeners]]
bind = "127.0.0.1:0"
protocol = "ws"

[[listeners]]
bind = "127.0.0.1:0"
protocol = "wss"
cert_file = "${join(dir, 'cert.pem')}"
key_file = "${join(dir, 'key.pem')}"

[sys]
interval_secs = 0
`);
  const ready = join(dir, 'ready.json');
  let log = '';
  broker = spawn(bin, ['serve', '--config', join(dir, 'thingmq.toml'), '--ready-file', ready, '--no-http'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  broker.stderr.on('data', (d) => { log += d; });
  for (let i = 0; i < 200 && !existsSync(ready); i++) {
    if (broker.exitCode !== null) break;
    await sleep(50);
  }
  assert.ok(existsSync(ready), `thingmq did not start:\n${log}`);
  // Listeners are reported in config order.
  const addrs = JSON.parse(readFileSync(ready, 'utf8')).mqtt;
  wsPort = Number(addrs[0].split(':').pop());
  wssPort = Number(addrs[1].split(':').pop());
});

after(async () => {
  if (broker && broker.exitCode === null) {
    const exited = new Promise((resolve) => broker.once('exit', resolve));
    broker.kill('SIGTERM');
    const timer = setTimeout(() => broker.kill('SIGKILL'), 8000);
    await exited;
    clearTimeout(timer);
  }
  rmSync(dir, { recursive: true, force: true });
});

// Subscribes, publishes to the same topic and waits (bounded) for the message back.
async function roundTrip(url, options, topic) {
  const client = await mqtt.connectAsync(url, { connectTimeout: 5000, reconnectPeriod: 0, ...options });
  try {
    const received = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message within 5 s')), 5000);
      client.on('message', (t, payload) => {
        clearTimeout(timer);
        resolve([t, payload.toString()]);
      });
    });
    const granted = await client.subscribeAsync(topic, { qos: 1 });
    assert.equal(granted[0].qos, 1);
    await client.publishAsync(topic, 'hello from mqtt.js', { qos: 1 });
    assert.deepEqual(await received, [topic, 'hello from mqtt.js']);
  } finally {
    await client.endAsync();
  }
}

test('MQTT 5 over ws://', { timeout: 15000 }, async () => {
  await roundTrip(`ws://127.0.0.1:${wsPort}/mqtt`, { protocolVersion: 5 }, 'js/ws/v5');
});

test('MQTT 3.1.1 over ws://', { timeout: 15000 }, async () => {
  await roundTrip(`ws://127.0.0.1:${wsPort}/mqtt`, { protocolVersion: 4 }, 'js/ws/v4');
});

test('MQTT 3.1 over ws:// (sub-protocol mqttv3.1)', { timeout: 15000 }, async () => {
  await roundTrip(
    `ws://127.0.0.1:${wsPort}/mqtt`,
    { protocolId: 'MQIsdp', protocolVersion: 3 },
    'js/ws/v3',
  );
});

test('MQTT 5 over wss:// trusting the test certificate', { timeout: 15000 }, async () => {
  // `ca` makes the client verify the server's self-signed certificate (no
  // rejectUnauthorized: false): the test checks real verification against localhost.
  await roundTrip(`wss://localhost:${wssPort}/mqtt`, { protocolVersion: 5, ca: caPem }, 'js/wss/v5');
});

test('MQTT 3.1.1 over wss://', { timeout: 15000 }, async () => {
  await roundTrip(`wss://localhost:${wssPort}/mqtt`, { protocolVersion: 4, ca: caPem }, 'js/wss/v4');
});

test('wrong path is refused with 404', { timeout: 15000 }, async () => {
  // MQTT.js keeps retrying a refused upgrade, so this one is a bare HTTP upgrade request.
  const status = await new Promise((resolve, reject) => {
    const req = http.get({
      host: '127.0.0.1',
      port: wsPort,
      path: '/nope',
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        'Sec-WebSocket-Protocol': 'mqtt',
      },
      timeout: 5000,
    });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
  });
  assert.equal(status, 404);
});
