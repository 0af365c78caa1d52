// Browser end-to-end test of the web console: Debian's chromium driven by playwright-core,
// against the real `thingmq serve` (free ports, a users file made by `thingmq console-user`),
// with MQTT.js clients as the devices. Saves a screenshot of each page: in docs/screenshots/
// with UPDATE_SCREENSHOTS=1 (they change with every run: ports, times), else in a temp dir.
//
// THINGMQ_BIN: the binary (default target/debug/thingmq); CHROMIUM: the browser
// (default /usr/bin/chromium).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { bin, browserPath, PASSWORD, until, startServer, stopProcess, launchBrowser, watchPage, screenshotDir, EXPECTED_401 } from './harness.mjs';

function connectDevice(url, clientId, topic) {
  return new Promise((resolve, reject) => {
    // A persistent session, so the kicked client stays listed as offline.
    const c = mqtt.connect(url, { clientId, reconnectPeriod: 0, protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } });
    c.once('error', reject);
    c.once('connect', () => c.subscribe(topic, { qos: 1 }, (err) => (err ? reject(err) : resolve(c))));
  });
}

test('console: login, dashboard, clients, subscriptions, kick, publish, live tail, retained', { timeout: 180_000 }, async () => {
  assert.ok(fs.existsSync(bin), `${bin} missing: build it first (cargo build -p thingmq)`);
  assert.ok(fs.existsSync(browserPath), `${browserPath} missing: apt-get install chromium`);
  const shots = screenshotDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thingmq-console-e2e-'));
  let server;
  let context;
  let device;
  try {
    server = await startServer(dir);
    const addrs = server.addrs;
    const [mqttAddr] = addrs.mqtt;
    const base = `http://${addrs.http}`;

    context = await launchBrowser(dir);
    const errors = [];
    const watch = (page) => watchPage(page, errors);
    const page = context.pages()[0] ?? (await context.newPage());
    watch(page);

    // Login: a wrong password shows an error, the right one the dashboard.
    await page.goto(`${base}/`);
    await page.getByLabel('User name').waitFor();
    assert.match(page.url(), /#\/login$/);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill('wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'wrong user name or password' }).waitFor();
    await page.getByLabel('Password').fill(PASSWORD);
    await page.screenshot({ path: path.join(shots, 'login.png') });
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    // Chromium logs every 401 answer as a failed resource: the "who am I" check before
    // signing in and the wrong password are expected to; nothing else may log an error.
    assert.ok(errors.length <= 2 && errors.every((e) => e === EXPECTED_401), errors.join('\n'));
    errors.length = 0;

    // Dashboard: pushed from $SYS over MQTT-over-WebSocket (the harness publishes it every
    // second). A device connects; the connection count (the device and the dashboard's own
    // WebSocket connection) and the rate chart show it.
    await page.locator('.live-state').getByText('Live (push)').waitFor();
    await page.getByText('The broker publishes $SYS every 1 s.').waitFor();
    device = await connectDevice(`mqtt://${mqttAddr}`, 'e2e-lamp', 'home/lamp/set');
    await until('the dashboard to count the device', async () => (await page.locator('[aria-labelledby="s-conn"]').textContent()) === '2');
    // Some traffic for the rate chart: the device publishes for a few polls.
    const talk = setInterval(() => device.publish('home/lamp/state', '{"on":true}'), 50);
    try {
      await page.locator('.chart canvas').first().waitFor({ timeout: 15000 });
      await new Promise((r) => setTimeout(r, 7000));
    } finally {
      clearInterval(talk);
    }
    await page.screenshot({ path: path.join(shots, 'dashboard.png') });

    // Clients: search finds the device online; its detail shows the subscription.
    await page.getByRole('link', { name: 'Clients' }).click();
    await page.getByLabel('Search').fill('e2e-lamp');
    const row = page.locator('tr', { hasText: 'e2e-lamp' });
    await row.getByText('online').waitFor();
    await page.screenshot({ path: path.join(shots, 'clients.png') });
    await row.getByRole('link', { name: 'e2e-lamp' }).click();
    await page.getByRole('heading', { name: 'Client e2e-lamp' }).waitFor();
    await page.getByText('home/lamp/set').waitFor();
    await page.screenshot({ path: path.join(shots, 'client.png') });

    // Subscriptions: who gets a message on a topic.
    await page.getByRole('link', { name: 'Subscriptions', exact: true }).click();
    await page.getByRole('heading', { name: 'Subscriptions' }).waitFor();
    await page.getByLabel('Matching topic').fill('home/lamp/set');
    // Only the device's own subscription matches (not the platform's /sys/… and $SYS ones).
    await page.getByText('Page 1 of 1 · 1 subscription', { exact: true }).waitFor();
    const subRow = page.locator('tr', { hasText: 'home/lamp/set' });
    await subRow.getByRole('link', { name: 'e2e-lamp' }).waitFor();
    assert.equal(await subRow.locator('td[data-label="QoS"]').textContent(), '1');
    await page.screenshot({ path: path.join(shots, 'subscriptions.png') });
    await page.getByLabel('Matching topic').fill('home/other/set');
    await page.getByText('No subscription matches.').waitFor();

    // Phone-sized screen: the same list stays usable.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${base}/#/clients`);
    await page.locator('tr', { hasText: 'e2e-lamp' }).getByText('online').waitFor();
    await page.screenshot({ path: path.join(shots, 'clients-phone.png') });
    await page.setViewportSize({ width: 1280, height: 800 });

    // Kick: the device's connection closes and the list shows it offline.
    const closed = new Promise((r) => device.once('close', r));
    await page.goto(`${base}/#/clients`);
    await page.locator('tr', { hasText: 'e2e-lamp' }).getByRole('button', { name: 'Kick e2e-lamp' }).click();
    await page.getByRole('status').filter({ hasText: 'was disconnected' }).waitFor();
    await closed;
    await page.locator('tr', { hasText: 'e2e-lamp' }).getByText('offline').waitFor();

    // Live tail in one tab, publish form in another: the message arrives over WebSocket.
    await page.getByRole('link', { name: 'Live tail' }).click();
    await page.getByLabel('Topic filter').fill('e2e/#');
    await page.getByRole('button', { name: 'Subscribe' }).click();
    await page.getByText('Subscribed to “e2e/#”.').waitFor();
    const pub = await context.newPage();
    watch(pub);
    await pub.goto(`${base}/#/publish`);
    await pub.getByLabel('Topic').fill('e2e/hello');
    await pub.getByLabel('Payload (text)').fill('{"on": true, "from": "console"}');
    await pub.getByLabel('QoS').selectOption('1');
    await pub.getByLabel('Retain').check();
    await pub.getByRole('button', { name: 'Publish' }).click();
    await pub.getByRole('status').filter({ hasText: 'Published to “e2e/hello”: 1 subscriber.' }).waitFor();
    await pub.screenshot({ path: path.join(shots, 'publish.png') });
    await page.locator('.messages li', { hasText: 'e2e/hello' }).getByText('"from": "console"').waitFor();
    await page.screenshot({ path: path.join(shots, 'tail.png') });
    await pub.close();

    // Retained: listed, viewed, deleted.
    await page.getByRole('link', { name: 'Retained' }).click();
    // The broker's own retained $SYS topics sort first and fill the first page: filter.
    await page.getByLabel('Topic filter (+ and # allowed)').fill('e2e/#');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.getByRole('link', { name: 'e2e/hello' }).waitFor();
    await page.screenshot({ path: path.join(shots, 'retained.png') });
    await page.getByRole('link', { name: 'e2e/hello' }).click();
    await page.getByLabel('Payload').getByText('"on": true').waitFor();
    await page.screenshot({ path: path.join(shots, 'retained-message.png') });
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('heading', { name: 'Retained messages' }).waitFor();
    await page.getByRole('link', { name: 'e2e/hello' }).waitFor({ state: 'detached' });
    // The browser context's cookie is the session: the API agrees the message is gone.
    assert.equal((await context.request.get(`${base}/api/v1/retained/e2e/hello`)).status(), 404);
    assert.equal((await fetch(`${base}/api/v1/retained/e2e/hello`)).status, 401, 'no cookie, no answer');

    // Signing out returns to the login page and the API refuses the old session.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('User name').waitFor();
    assert.deepEqual(errors, [], 'the console logged errors');

    // A viewer sees the clients but gets no kick button and may not publish.
    const viewerDevice = await connectDevice(`mqtt://${mqttAddr}`, 'e2e-sensor', 'x/y');
    try {
      await page.getByLabel('User name').fill('watcher');
      await page.getByLabel('Password').fill(PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByText('watcher (viewer)').waitFor();
      await page.goto(`${base}/#/clients`);
      await page.locator('tr', { hasText: 'e2e-sensor' }).getByText('online').waitFor();
      assert.equal(await page.getByRole('button', { name: /^Kick/ }).count(), 0);
      await page.goto(`${base}/#/publish`);
      await page.getByRole('alert').filter({ hasText: 'may not publish' }).waitFor();
    } finally {
      viewerDevice.end(true);
    }

    assert.deepEqual(errors, [], 'the console logged errors');
  } finally {
    device?.end(true);
    await context?.close();
    await stopProcess(server?.proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
