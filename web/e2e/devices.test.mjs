// Browser end-to-end test of the console's device pages, against the real `thingmq serve`:
// a product is created from examples/things/thermostat.json through the UI, a device is
// registered there (its secret read from the page) and played by an MQTT.js client in this
// test, which reports values and answers property sets and the Boost RRPC call; `thingmq
// simulate` runs a few more devices of the product. Screenshots as in console.test.mjs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { root, bin, browserPath, until, startServer, stopProcess, launchBrowser, watchPage, signIn, screenshotDir, EXPECTED_401 } from './harness.mjs';

const PK = 'thermostat';
const DN = 'e2e-thermo';

/** The device: plain device authentication (user name `dn&pk`, password the secret). */
function connectDevice(url, secret, dn = DN) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: `${dn}-e2e`, username: `${dn}&${PK}`, password: secret, reconnectPeriod: 0, protocolVersion: 4 });
    c.once('error', reject);
    c.once('connect', () => {
      c.subscribe([`/sys/${PK}/${dn}/thing/service/property/set`, `/sys/${PK}/${dn}/rrpc/request/+`], { qos: 0 }, (err, granted) => {
        if (err) reject(err);
        else if (granted.some((g) => g.qos >= 0x80)) reject(new Error(`device subscription refused: ${JSON.stringify(granted)}`));
        else resolve(c);
      });
    });
  });
}

function report(device, params, dn = DN) {
  device.publish(`/sys/${PK}/${dn}/thing/event/property/post`, JSON.stringify({ id: String(Date.now()), version: '1.0', params, method: 'thing.event.property.post' }));
}

test('device pages: products, devices, live values, controls, services, history', { timeout: 240_000 }, async () => {
  assert.ok(fs.existsSync(bin), `${bin} missing: build it first (cargo build -p thingmq)`);
  assert.ok(fs.existsSync(browserPath), `${browserPath} missing: apt-get install chromium`);
  const shots = screenshotDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thingmq-devices-e2e-'));
  let server;
  let context;
  let device;
  let sim;
  let reporter;
  try {
    server = await startServer(dir);
    const [mqttAddr] = server.addrs.mqtt;
    const base = `http://${server.addrs.http}`;
    context = await launchBrowser(dir);
    const errors = [];
    const page = context.pages()[0] ?? (await context.newPage());
    watchPage(page, errors);
    const nav = (name) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });
    await signIn(page, base);
    assert.ok(errors.every((e) => e === EXPECTED_401), errors.join('\n'));
    errors.length = 0;

    // Products: empty at first; a broken model is refused with the JSON path named; the
    // example thermostat is created from its file.
    await nav('Products').click();
    await page.getByText('No products yet.').waitFor();
    await page.getByLabel('Product key').fill('broken');
    await page.getByLabel('Thing model (TSL JSON)').fill('{"properties": [{"identifier": "x", "accessMode": "rw", "dataType": {"type": "nonsense"}}]}');
    await page.getByRole('button', { name: 'Create product' }).click();
    const refusal = await page.getByRole('alert').filter({ hasText: 'Cannot create the product' }).textContent();
    assert.match(refusal, /properties\[0\]|properties\.0|dataType/, `the message names the path: ${refusal}`);
    // Chromium logs the refusal (400) as a failed resource; nothing else may log an error.
    assert.deepEqual(errors, ['console: Failed to load resource: the server responded with a status of 400 (Bad Request)']);
    errors.length = 0;
    await page.getByLabel('Product key').fill('');
    await page.getByLabel('Thing model file').setInputFiles(path.join(root, 'examples/things/thermostat.json'));
    await until('the file in the text area', async () => (await page.getByLabel('Thing model (TSL JSON)').inputValue()).includes('TargetTemperature'));
    await page.getByRole('button', { name: 'Create product' }).click();
    await page.getByRole('status').filter({ hasText: `Product “${PK}” was created.` }).waitFor();
    await page.getByRole('link', { name: PK, exact: true }).waitFor();
    await page.screenshot({ path: path.join(shots, 'products.png'), fullPage: true });
    await page.getByRole('link', { name: PK, exact: true }).click();
    await page.getByRole('heading', { name: `Product ${PK}` }).waitFor();
    const exported = await page.getByRole('link', { name: 'Export the thing model' });
    assert.equal(await exported.getAttribute('download'), `${PK}.json`);
    const shown = JSON.parse(await page.getByLabel('Thing model', { exact: true }).textContent());
    assert.ok(shown.services.some((s) => s.identifier === 'Boost'), 'the exported model has the Boost service');
    await page.screenshot({ path: path.join(shots, 'product.png') });

    // Devices: register ours (the secret is shown once), then simulate three more.
    await nav('Devices').click();
    await page.getByText('No devices yet.').waitFor();
    await page.getByLabel('Device name').fill(DN);
    await page.getByRole('button', { name: 'Register' }).click();
    const secret = (await page.locator('.device-secret').textContent()).trim();
    assert.match(secret, /^[0-9a-f]{32}$/);
    await page.locator('tr', { hasText: DN }).getByText('offline').waitFor();

    device = await connectDevice(`mqtt://${mqttAddr}`, secret);
    const sets = [];
    const calls = [];
    let mode = 0;
    let target = 21;
    let temp = 20.0;
    device.on('message', (topic, payload) => {
      const msg = JSON.parse(payload.toString());
      if (topic.endsWith('/thing/service/property/set')) {
        sets.push(msg.params);
        if ('Mode' in msg.params) mode = msg.params.Mode;
        if ('TargetTemperature' in msg.params) target = msg.params.TargetTemperature;
        device.publish(`${topic}_reply`, JSON.stringify({ id: msg.id, code: 200, data: {}, message: 'success', version: '1.0' }));
        report(device, msg.params);
      } else if (topic.includes('/rrpc/request/')) {
        calls.push(msg);
        const endsAt = 1_900_000_000_000 + msg.params.Minutes * 60_000;
        device.publish(topic.replace('/rrpc/request/', '/rrpc/response/'), JSON.stringify({ id: msg.id, code: 200, data: { EndsAt: endsAt }, message: 'success', version: '1.0' }));
      }
    });
    report(device, { CurrentTemperature: temp, TargetTemperature: target, Humidity: 40, Mode: mode, HeatingActive: 0 });

    const simLog = fs.openSync(path.join(dir, 'simulate.log'), 'w');
    sim = spawn(bin, ['simulate', '--product', PK, '--count', '3', '--prefix', 'e2e-sim-', '--interval-ms', '500', '--api', base, '--api-key', server.apiKey, '--host', mqttAddr.split(':')[0], '--port', mqttAddr.split(':')[1]], {
      stdio: ['ignore', simLog, simLog],
    });
    await page.getByLabel('Product').first().selectOption(PK);
    await until('four devices online', async () => (await page.locator('tbody .badge.on').count()) === 4, 30000);
    await page.screenshot({ path: path.join(shots, 'devices.png') });
    await page.getByLabel('State').selectOption('true');
    await page.getByLabel('Search').fill('e2e-sim-1');
    await until('the search to narrow the list', async () => (await page.locator('tbody tr').count()) === 1);

    // Disable and enable a simulated device: it is refused while disabled.
    const simRow = page.locator('tr', { hasText: 'e2e-sim-1' });
    await simRow.getByRole('button', { name: 'Disable e2e-sim-1' }).click();
    await page.getByRole('status').filter({ hasText: 'was disabled' }).waitFor();
    await page.getByLabel('State').selectOption('');
    await simRow.getByText('disabled').waitFor();
    await simRow.getByRole('button', { name: 'Enable e2e-sim-1' }).click();
    await page.getByRole('status').filter({ hasText: 'was enabled' }).waitFor();

    // Phone-sized devices list.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByLabel('Search').fill('');
    await page.locator('tr', { hasText: DN }).getByText('online').waitFor();
    await page.screenshot({ path: path.join(shots, 'devices-phone.png') });
    await page.setViewportSize({ width: 1280, height: 800 });

    // The device page: values arrive live over MQTT-over-WebSocket, without a reload.
    await page.getByRole('link', { name: DN }).click();
    await page.getByRole('heading', { name: `Device ${DN}` }).waitFor();
    await page.locator('.live-state').getByText('Live (push)').waitFor();
    const navigations = [];
    page.on('framenavigated', (f) => f === page.mainFrame() && navigations.push(f.url()));
    const cell = (id) => page.locator(`td[data-property="${id}"]`);
    temp = 23.7;
    report(device, { CurrentTemperature: temp });
    await until('the live temperature', async () => (await cell('CurrentTemperature').textContent()) === '23.7 °C');
    reporter = setInterval(() => {
      temp = Math.round((temp + 0.1) * 10) / 10;
      report(device, { CurrentTemperature: temp, Humidity: 40 + Math.round(Math.random() * 5) });
    }, 300);

    // An enum control: the set reaches the device, which answers and reports the new value.
    await page.getByLabel('Mode', { exact: true }).selectOption('1');
    await page.getByRole('button', { name: 'Set Mode' }).click();
    await page.locator('[data-answer="Mode"]').getByText('Device answered: code 200').waitFor();
    await until('the set command at the device', () => sets.some((p) => p.Mode === 1));
    await until('the reported mode', async () => (await cell('Mode').textContent()) === 'heat (1)');

    // A slider: 30 °C.
    await page.getByLabel('Target temperature', { exact: true }).fill('30');
    await page.getByRole('button', { name: 'Set Target temperature' }).click();
    await until('the target at the device', () => sets.some((p) => p.TargetTemperature === 30));
    await until('the reported target', async () => (await cell('TargetTemperature').textContent()) === '30 °C');

    // The Boost service (sync, RRPC): its output is shown.
    await page.getByLabel('Duration').fill('15');
    await page.getByRole('button', { name: 'Call Boost heating' }).click();
    const expectedEnd = new Date(1_900_000_000_000 + 15 * 60_000);
    await page.locator('[data-output="Boost"]').getByText('The device answered (code 200').waitFor();
    await until('the service call at the device', () => calls.some((c) => c.method === 'thing.service.Boost' && c.params.Minutes === 15));
    assert.equal(await page.locator('[data-output="Boost"] dd').textContent(), await page.evaluate((ms) => new Date(ms).toLocaleString(), expectedEnd.getTime()));

    // An event arrives live.
    device.publish(`/sys/${PK}/${DN}/thing/event/FrostWarning/post`, JSON.stringify({ id: '9', version: '1.0', params: { value: { Temperature: 2.5 }, time: Date.now() }, method: 'thing.event.FrostWarning.post' }));
    await page.locator('.messages li', { hasText: 'Frost warning' }).getByText('"Temperature":2.5').waitFor();

    // History of the room temperature, downsampled (last 24 hours) and raw (last 15 minutes).
    await page.getByLabel('Property', { exact: true }).selectOption('CurrentTemperature');
    await page.getByLabel('Range').selectOption({ label: 'last 24 hours' });
    await page.getByRole('button', { name: 'Show history' }).click();
    await page.getByText(/^\d+ buckets? of 288 s/).waitFor();
    await page.getByRole('img', { name: 'History of Room temperature' }).locator('canvas').waitFor();
    await page.getByLabel('Range').selectOption({ label: 'last 15 minutes' });
    // Reports are stored in batches: ask again until several have arrived.
    await until('several raw values', async () => {
      await page.getByRole('button', { name: 'Show history' }).click();
      const shown = await page.getByText(/^\d+ values?$/).textContent({ timeout: 5000 });
      return parseInt(shown, 10) >= 5;
    }, 20000);
    await page.getByRole('img', { name: 'History of Room temperature' }).locator('canvas').waitFor();
    await page.getByText('Online and offline').waitFor();
    await page.locator('#log-head ~ table').getByText('online').first().waitFor();
    assert.deepEqual(navigations, [], 'the page did not reload');
    // The page down to the events (tags and connection details have their own screenshot).
    const below = await page.getByRole('region', { name: 'Tags' }).boundingBox();
    await page.screenshot({ path: path.join(shots, 'device.png'), fullPage: true, clip: { x: 0, y: 0, width: 1280, height: Math.round(below.y) } });

    // Phone-sized device page.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('heading', { name: 'Properties' }).scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, 'device-phone.png') });
    await page.setViewportSize({ width: 1280, height: 800 });

    // Offline: a set is stored as desired (202).
    clearInterval(reporter);
    reporter = undefined;
    device.end(true);
    device = undefined;
    await page.locator('.badge', { hasText: 'offline' }).first().waitFor({ timeout: 15000 });
    await page.getByLabel('Mode', { exact: true }).selectOption('2');
    await page.getByRole('button', { name: 'Set Mode' }).click();
    await page.locator('[data-answer="Mode"]').getByText('stored as desired (202)').waitFor();

    // Deleting the device from the list.
    await page.getByRole('link', { name: '‹ All devices' }).click();
    await page.locator('tr', { hasText: DN }).getByRole('button', { name: `Delete ${DN}` }).click();
    await page.getByRole('status').filter({ hasText: `Device “${DN}” was deleted.` }).waitFor();
    assert.equal((await context.request.get(`${base}/api/v1/devices/${PK}/${DN}`)).status(), 404);

    assert.deepEqual(errors, [], 'the console logged errors');

    // A viewer sees the devices and a device's values, without the controls.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('User name').waitFor();
    await signIn(page, base, 'watcher');
    await nav('Devices').click();
    await page.getByRole('link', { name: 'e2e-sim-0' }).waitFor();
    assert.equal(await page.getByRole('button', { name: /^(Disable|Delete)/ }).count(), 0);
    assert.equal(await page.getByRole('button', { name: 'Register' }).count(), 0);
    await page.getByRole('link', { name: 'e2e-sim-0' }).click();
    await page.getByText('Viewers cannot change devices.').waitFor();
    await page.getByText('Viewers cannot call services.').waitFor();
    await until('a value of the simulated device', async () => /°C$/.test(await cell('CurrentTemperature').textContent()));

    // Signing in again checks "who am I" first, which Chromium logs as a 401.
    assert.ok(errors.every((e) => e === EXPECTED_401), errors.join('\n'));
  } finally {
    if (reporter) clearInterval(reporter);
    device?.end(true);
    await stopProcess(sim);
    await context?.close();
    await stopProcess(server?.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('device page without an MQTT-over-WebSocket listener polls the shadow', { timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thingmq-devices-poll-e2e-'));
  let server;
  let context;
  let device;
  try {
    server = await startServer(dir, { ws: false });
    const [mqttAddr] = server.addrs.mqtt;
    const base = `http://${server.addrs.http}`;
    const auth = { Authorization: `Bearer ${server.apiKey}`, 'Content-Type': 'application/json' };
    const tsl = JSON.parse(fs.readFileSync(path.join(root, 'examples/things/thermostat.json'), 'utf8'));
    let r = await fetch(`${base}/api/v1/products`, { method: 'POST', headers: auth, body: JSON.stringify({ productKey: PK, tsl }) });
    assert.equal(r.status, 201, await r.text());
    r = await fetch(`${base}/api/v1/products/${PK}/devices`, { method: 'POST', headers: auth, body: JSON.stringify({ deviceName: 'e2e-poll' }) });
    assert.equal(r.status, 201);
    const { deviceSecret } = await r.json();
    device = await connectDevice(`mqtt://${mqttAddr}`, deviceSecret, 'e2e-poll');
    report(device, { CurrentTemperature: 18.5 }, 'e2e-poll');

    context = await launchBrowser(dir);
    const errors = [];
    const page = context.pages()[0] ?? (await context.newPage());
    watchPage(page, errors);
    await signIn(page, base);
    errors.length = 0;
    await page.goto(`${base}/#/devices/${PK}/e2e-poll`);
    await page.getByText('No MQTT-over-WebSocket listener. Showing the shadow, refreshed every 2 s.').waitFor();
    const cell = page.locator('td[data-property="CurrentTemperature"]');
    await until('the first value', async () => (await cell.textContent()) === '18.5 °C');
    report(device, { CurrentTemperature: 19.3 }, 'e2e-poll');
    await until('the polled value', async () => (await cell.textContent()) === '19.3 °C', 10000);
    assert.deepEqual(errors, [], 'the console logged errors');
  } finally {
    device?.end(true);
    await context?.close();
    await stopProcess(server?.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('device page: a switch and an async service against `thingmq simulate`', { timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thingmq-devices-light-e2e-'));
  let server;
  let context;
  let sim;
  try {
    server = await startServer(dir);
    const [mqttAddr] = server.addrs.mqtt;
    const base = `http://${server.addrs.http}`;
    const tsl = JSON.parse(fs.readFileSync(path.join(root, 'examples/things/light.json'), 'utf8'));
    const r = await fetch(`${base}/api/v1/products`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.apiKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ productKey: 'smartLight', tsl }),
    });
    assert.equal(r.status, 201, await r.text());
    const simLog = fs.openSync(path.join(dir, 'simulate.log'), 'w');
    sim = spawn(bin, ['simulate', '--product', 'smartLight', '--count', '1', '--prefix', 'e2e-light-', '--interval-ms', '500', '--api', base, '--api-key', server.apiKey, '--host', mqttAddr.split(':')[0], '--port', mqttAddr.split(':')[1]], {
      stdio: ['ignore', simLog, simLog],
    });

    context = await launchBrowser(dir);
    const errors = [];
    const page = context.pages()[0] ?? (await context.newPage());
    watchPage(page, errors);
    await signIn(page, base);
    errors.length = 0;
    await until('the simulated light online', async () => {
      const d = await (await fetch(`${base}/api/v1/devices/smartLight/e2e-light-0`, { headers: { Authorization: `Bearer ${server.apiKey}` } })).json();
      return d.online === true;
    }, 30000);
    await page.goto(`${base}/#/devices/smartLight/e2e-light-0`);
    await page.locator('.live-state').getByText('Live (push)').waitFor();

    // The switch: flipping it sends the set at once; the simulator answers and reports it.
    const sw = page.getByRole('switch', { name: 'Switch' });
    const wasOn = await sw.isChecked();
    await sw.click();
    await page.locator('[data-answer="LightSwitch"]').getByText('Device answered: code 200').waitFor();
    const cell = page.locator('td[data-property="LightSwitch"]');
    await until('the reported switch', async () => (await cell.textContent()).endsWith(`(${wasOn ? 0 : 1})`));

    // The async Blink service: a call id, followed until the device's reply.
    await page.getByLabel('Times').fill('3');
    await page.getByRole('button', { name: 'Call Blink' }).click();
    await page.locator('[data-output="Blink"]').getByText(/^Call .+ \(code 200\)$/).waitFor();
    assert.deepEqual(errors, [], 'the console logged errors');
  } finally {
    await stopProcess(sim);
    await context?.close();
    await stopProcess(server?.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
