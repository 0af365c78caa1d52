// Browser end-to-end tests of the console's editing and error paths, against the real
// `thingmq serve`: a product's thing model edited (with the API's JSON-path refusals shown),
// a product delete refused with 409 while it has devices, a device's tags, its connection
// details and a secret reset, the event-type filter, the 504 of a sync service the device
// does not answer; and the live (push) connection behind a WebSocket listener that needs
// MQTT credentials, on the dashboard and the device page.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { root, bin, browserPath, until, startServer, stopProcess, launchBrowser, watchPage, signIn, screenshotDir, MQTT_USER, MQTT_PASSWORD } from './harness.mjs';

const PK = 'thermostat';
const DN = 'e2e-edit';

/** A device with plain authentication; resolves with the client or rejects with the refusal. */
function connectDevice(url, secret, dn = DN) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: `${dn}-e2e`, username: `${dn}&${PK}`, password: secret, reconnectPeriod: 0, protocolVersion: 4 });
    c.once('error', (e) => {
      c.end(true);
      reject(e);
    });
    c.once('connect', () => {
      c.subscribe([`/sys/${PK}/${dn}/thing/service/property/set`, `/sys/${PK}/${dn}/rrpc/request/+`], { qos: 0 }, (err) => (err ? reject(err) : resolve(c)));
    });
  });
}

function event(device, id, value, dn = DN) {
  device.publish(`/sys/${PK}/${dn}/thing/event/${id}/post`, JSON.stringify({ id: String(Date.now()), version: '1.0', params: { value, time: Date.now() }, method: `thing.event.${id}.post` }));
}

function report(device, params, dn = DN) {
  device.publish(`/sys/${PK}/${dn}/thing/event/property/post`, JSON.stringify({ id: String(Date.now()), version: '1.0', params, method: 'thing.event.property.post' }));
}

/** Creates the thermostat product and a device through the API; the device's secret. */
async function provision(base, apiKey, dn = DN) {
  const auth = { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' };
  const tsl = JSON.parse(fs.readFileSync(path.join(root, 'examples/things/thermostat.json'), 'utf8'));
  let r = await fetch(`${base}/api/v1/products`, { method: 'POST', headers: auth, body: JSON.stringify({ productKey: PK, tsl }) });
  assert.equal(r.status, 201, await r.text());
  r = await fetch(`${base}/api/v1/products/${PK}/devices`, { method: 'POST', headers: auth, body: JSON.stringify({ deviceName: dn }) });
  assert.equal(r.status, 201);
  return (await r.json()).deviceSecret;
}

/** Chromium logs each 4xx/5xx answer as a failed resource; those named here are expected. */
function only(errors, ...statuses) {
  const unexpected = errors.filter((e) => !statuses.some((s) => e.includes(`status of ${s}`)));
  assert.deepEqual(unexpected, [], 'the console logged errors');
  errors.length = 0;
}

test('editing: thing model, refused delete, tags, connection details, secret reset, event filter, 504', { timeout: 180_000 }, async () => {
  assert.ok(fs.existsSync(bin), `${bin} missing: build it first (cargo build -p thingmq)`);
  assert.ok(fs.existsSync(browserPath), `${browserPath} missing: apt-get install chromium`);
  const shots = screenshotDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thingmq-editing-e2e-'));
  let server;
  let context;
  let device;
  try {
    server = await startServer(dir, { callTimeoutMs: 1000 });
    const [mqttAddr] = server.addrs.mqtt;
    const base = `http://${server.addrs.http}`;
    const secret = await provision(base, server.apiKey);
    context = await launchBrowser(dir);
    const errors = [];
    const page = context.pages()[0] ?? (await context.newPage());
    watchPage(page, errors);
    await signIn(page, base);
    errors.length = 0;

    // The thing model: not JSON, then refused by the API with the JSON path, then saved.
    await page.goto(`${base}/#/products/${PK}`);
    const editor = page.getByLabel('Thing model to save (TSL JSON)');
    await editor.waitFor();
    const model = JSON.parse(await editor.inputValue());
    await editor.fill('{"properties": [');
    await page.getByRole('button', { name: 'Save the thing model' }).click();
    await page.getByRole('alert').filter({ hasText: 'The thing model is not JSON' }).waitFor();
    const broken = structuredClone(model);
    broken.properties[1].dataType.type = 'nonsense';
    await editor.fill(JSON.stringify(broken, null, 2));
    await page.getByRole('button', { name: 'Save the thing model' }).click();
    const refusal = await page.getByRole('alert').filter({ hasText: 'Cannot save the thing model' }).textContent();
    assert.match(refusal, /properties\[1\]/, `the message names the path: ${refusal}`);
    only(errors, 400);
    await page.getByRole('alert').filter({ hasText: 'Cannot save the thing model' }).scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, 'product-edit.png') });
    const smaller = structuredClone(model);
    const dropped = smaller.properties.pop();
    await editor.fill(JSON.stringify(smaller, null, 2));
    await page.getByLabel('Product name').fill('Hall thermostat');
    await page.getByRole('button', { name: 'Save the thing model' }).click();
    await page.getByRole('status').filter({ hasText: `The thing model of “${PK}” was saved.` }).waitFor();
    await page.locator('.facts dd', { hasText: 'Hall thermostat' }).waitFor();
    const saved = await (await context.request.get(`${base}/api/v1/products/${PK}`)).json();
    assert.equal(saved.name, 'Hall thermostat');
    assert.equal(saved.nodeType, 'direct', 'the node type is kept');
    assert.ok(!saved.tsl.properties.some((p) => p.identifier === dropped.identifier), 'the saved model is the edited one');
    // Back to the full model for the rest of the test.
    await page.getByLabel('Thing model to save (TSL JSON)').fill(JSON.stringify(model));
    // The first save's notice is still shown: wait for the page to load the product again
    // after this save, or the next click lands on the page this save replaces.
    // Also let gateways register devices of this product (thing/sub/register).
    await page.getByLabel('Gateways may register devices of this product (thing/sub/register)').check();
    const reloaded = page.waitForResponse((r) => r.url().endsWith(`/api/v1/products/${PK}`) && r.request().method() === 'GET');
    await page.getByRole('button', { name: 'Save the thing model' }).click();
    await reloaded;
    await page.getByRole('status').filter({ hasText: 'was saved' }).waitFor();
    await page.locator('.facts dd', { hasText: 'gateways may register devices' }).waitFor();
    assert.equal((await (await context.request.get(`${base}/api/v1/products/${PK}`)).json()).dynamicRegister, true);
    assert.ok(await page.getByLabel('Gateways may register devices of this product (thing/sub/register)').isChecked());

    // Deleting a product that has a device: refused (409) and said so.
    await page.getByRole('button', { name: 'Delete product' }).click();
    const conflict = await page.getByRole('alert').filter({ hasText: 'Cannot delete' }).textContent();
    assert.match(conflict, /device/, conflict);
    only(errors, 409);
    assert.equal((await context.request.get(`${base}/api/v1/products/${PK}`)).status(), 200);

    // The device page: tags, connection details, events, a sync call nobody answers.
    device = await connectDevice(`mqtt://${mqttAddr}`, secret);
    await page.goto(`${base}/#/devices/${PK}/${DN}`);
    await page.getByRole('heading', { name: `Device ${DN}` }).waitFor();
    // Live before the device sends events, so they arrive pushed.
    await page.locator('.live-state').getByText('Live (push)').waitFor();
    const tags = page.getByLabel('Tags (one key=value per line)');
    await tags.fill('nonsense');
    await page.getByRole('button', { name: 'Save tags' }).click();
    await page.getByRole('alert').filter({ hasText: 'Line 1: “key=value” is needed' }).waitFor();
    await tags.fill('room=hall\nfloor = 2\n');
    await page.getByRole('button', { name: 'Save tags' }).click();
    await page.getByRole('status').filter({ hasText: 'Tags saved (2).' }).waitFor();
    await page.locator('dd[data-field="tags"]', { hasText: 'floor=2, room=hall' }).waitFor();
    const d = await (await context.request.get(`${base}/api/v1/devices/${PK}/${DN}`)).json();
    assert.deepEqual(d.tags, { floor: '2', room: 'hall' });

    const connect = page.getByRole('region', { name: 'Connecting the device' });
    await connect.getByText(`${DN}&${PK}`).waitFor();
    assert.match(await connect.locator('dd[data-field="mqtt-ports"]').textContent(), new RegExp(`^${mqttAddr.split(':')[1]} \\(MQTT\\)`));

    // Events of two types; the filter shows one type at a time.
    event(device, 'FrostWarning', { Temperature: 1.5 });
    event(device, 'SensorFault', { Detail: 'probe open' });
    const events = page.locator('.messages li');
    await until('both events live', async () => (await events.count()) === 2);
    // History is written in batches: the filter asks the API, so wait until both are stored.
    const stored = async () => (await (await context.request.get(`${base}/api/v1/devices/${PK}/${DN}/events`)).json()).events.length;
    await until('both events stored', async () => (await stored()) === 2);
    await page.getByLabel('Event type').selectOption('alert');
    await until('only the alert', async () => (await events.count()) === 1 && (await events.first().textContent()).includes('Frost warning'));
    await page.getByLabel('Event type').selectOption('error');
    await until('only the error', async () => (await events.count()) === 1 && (await events.first().textContent()).includes('probe open'));
    event(device, 'FrostWarning', { Temperature: 0.5 });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await events.count(), 1, 'a live alert is not shown under "error"');
    await until('the third event stored', async () => (await stored()) === 3);
    await page.getByLabel('Event type').selectOption('');
    await until('all three events', async () => (await events.count()) === 3);

    // Boost is sync and the device never answers: 504 after call_timeout_ms.
    await page.getByLabel('Duration').fill('15');
    await page.getByRole('button', { name: 'Call Boost heating' }).click();
    await page.locator('[data-output="Boost"]').getByRole('alert').filter({ hasText: 'No answer from the device in time (504)' }).waitFor();
    only(errors, 504);

    // A new secret: shown once; the device is disconnected and only the new one connects.
    const closed = new Promise((r) => device.once('close', r));
    await page.getByRole('button', { name: 'Reset secret' }).click();
    const fresh = (await page.getByLabel('New device secret').textContent()).trim();
    assert.match(fresh, /^[0-9a-f]{32}$/);
    assert.notEqual(fresh, secret);
    await closed;
    device.end(true);
    device = undefined;
    await assert.rejects(connectDevice(`mqtt://${mqttAddr}`, secret), 'the old secret is refused');
    device = await connectDevice(`mqtt://${mqttAddr}`, fresh);
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('heading', { name: 'Connecting the device' }).scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, 'device-connection-phone.png') });
    const phoneWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(phoneWidth <= 390, `no sideways scrolling on a phone (${phoneWidth}px)`);
    assert.deepEqual(errors, [], 'the console logged errors');

    // A viewer sees the tags and connection details, without the editors or the reset.
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('User name').waitFor();
    await signIn(page, base, 'watcher');
    await page.goto(`${base}/#/devices/${PK}/${DN}`);
    await page.getByText('an admin can reset it').waitFor();
    assert.equal(await page.getByRole('button', { name: /^(Reset secret|Save tags)$/ }).count(), 0);
    await page.goto(`${base}/#/products/${PK}`);
    await page.getByRole('heading', { name: 'Thing model' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Save the thing model' }).count(), 0);
    only(errors, 401);
  } finally {
    device?.end(true);
    await context?.close();
    await stopProcess(server?.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('live updates behind a WebSocket listener that needs MQTT credentials', { timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thingmq-live-auth-e2e-'));
  let server;
  let context;
  let device;
  try {
    server = await startServer(dir, { wsAuth: true });
    const [mqttAddr] = server.addrs.mqtt;
    const base = `http://${server.addrs.http}`;
    const secret = await provision(base, server.apiKey);
    device = await connectDevice(`mqtt://${mqttAddr}`, secret);
    report(device, { CurrentTemperature: 18.5 });
    context = await launchBrowser(dir);
    const errors = [];
    const page = context.pages()[0] ?? (await context.newPage());
    watchPage(page, errors);
    await signIn(page, base);
    errors.length = 0;

    // The dashboard polls and asks for credentials; a wrong password is refused; the right
    // one makes it live, kept in sessionStorage only.
    const state = page.locator('.live-state');
    await state.getByText('Polling', { exact: true }).waitFor();
    await state.getByText('The MQTT-over-WebSocket listener needs a user name and password.').waitFor();
    await page.locator('[aria-labelledby="s-conn"]').waitFor();
    await page.getByLabel('MQTT user name').fill(MQTT_USER);
    await page.getByLabel('MQTT password').fill('wrong');
    await page.getByRole('button', { name: 'Connect live' }).click();
    await state.getByText('The broker refused the MQTT user name or password.').waitFor();
    await page.getByLabel('MQTT password').fill(MQTT_PASSWORD);
    await page.getByRole('button', { name: 'Connect live' }).click();
    await state.getByText('Live (push)').waitFor();
    const stored = await page.evaluate(() => [sessionStorage.getItem('thingmq.mqtt-credentials'), JSON.stringify(localStorage)]);
    assert.deepEqual(JSON.parse(stored[0]), { username: MQTT_USER, password: MQTT_PASSWORD });
    assert.ok(!stored[1].includes(MQTT_PASSWORD), 'nothing in localStorage');

    // The live tail starts with them filled in.
    await page.getByRole('link', { name: 'Live tail' }).click();
    assert.equal(await page.getByLabel('MQTT user name (optional)').inputValue(), MQTT_USER);
    assert.equal(await page.getByLabel('MQTT password (optional)').inputValue(), MQTT_PASSWORD);

    // The device page connects with the saved credentials: values arrive pushed.
    await page.goto(`${base}/#/devices/${PK}/${DN}`);
    await state.getByText('Live (push)').waitFor();
    const cell = page.locator('td[data-property="CurrentTemperature"]');
    await until('the first value', async () => (await cell.textContent()) === '18.5 °C');
    report(device, { CurrentTemperature: 22.1 });
    await until('the pushed value', async () => (await cell.textContent()) === '22.1 °C', 5000);

    // Leaving a live page starts no polling (regression: closing the live connection used to
    // report "polling", which started the shadow poll of a page no longer shown).
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    const shadowPolls = [];
    const onRequest = (r) => r.url().endsWith('/shadow') && shadowPolls.push(r.url());
    page.on('request', onRequest);
    await new Promise((r) => setTimeout(r, 4500));
    page.off('request', onRequest);
    assert.deepEqual(shadowPolls, [], 'no shadow polls after leaving the device page');
    await page.goBack();
    await state.getByText('Live (push)').waitFor();

    // Forgotten: back to polling (and the form), values still arrive.
    await page.getByRole('button', { name: 'Forget' }).click();
    await state.getByText('Polling', { exact: true }).waitFor();
    await page.getByLabel('MQTT password').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('thingmq.mqtt-credentials')), null);
    report(device, { CurrentTemperature: 23.4 });
    await until('the polled value', async () => (await cell.textContent()) === '23.4 °C', 10000);

    assert.deepEqual(errors, [], 'the console logged errors');
  } finally {
    device?.end(true);
    await context?.close();
    await stopProcess(server?.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
