// Live tail: subscribes to a topic filter over MQTT-over-WebSocket (a listener the server
// reports at /api/v1/endpoints) and shows messages as they arrive.

import mqtt, { type MqttClient } from 'mqtt';
import { api, type WsEndpoint } from '../api';
import { h, fill, errorBox, emptyState, pageHeader } from '../ui';
import { savedCredentials } from '../live';

const KEEP = 500;

function wsUrl(e: WsEndpoint): string {
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  return `${e.tls ? 'wss' : 'ws'}://${host}:${e.port}${e.path}`;
}

function shown(payload: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(payload);
  } catch {
    return `(binary, ${payload.length} bytes) ` + Array.from(payload.slice(0, 32), (b) => b.toString(16).padStart(2, '0')).join(' ');
  }
}

export async function tailPage(root: HTMLElement) {
  const status = h('div', { role: 'status' });
  fill(root, pageHeader('Live tail'), status);
  let endpoints: WsEndpoint[];
  try {
    endpoints = (await api<{ mqtt_ws: WsEndpoint[] }>('/api/v1/endpoints')).mqtt_ws;
  } catch (e) {
    fill(status, errorBox(`Cannot learn the WebSocket endpoint: ${(e as Error).message}`));
    return;
  }
  if (endpoints.length === 0) {
    fill(status, errorBox('This server has no MQTT-over-WebSocket listener, so the console cannot subscribe. Add a listener with protocol = "ws" (see docs/config.md).'));
    return;
  }
  const url = h('input', { id: 'tail-url', value: wsUrl(endpoints[0]), spellcheck: 'false' });
  const filter = h('input', { id: 'tail-filter', value: '#', required: true, spellcheck: 'false' });
  // Prefilled with what the live pages use (this tab's sessionStorage), if anything.
  const saved = savedCredentials();
  const user = h('input', { id: 'tail-user', autocomplete: 'off', placeholder: 'only if the broker needs one', value: saved?.username ?? '' });
  const pass = h('input', { id: 'tail-pass', type: 'password', autocomplete: 'off' });
  pass.value = saved?.password ?? '';
  const start = h('button', { type: 'submit' }, 'Subscribe');
  const stop = h('button', { type: 'button', class: 'secondary', disabled: true }, 'Stop');
  const clear = h('button', { type: 'button', class: 'secondary' }, 'Clear');
  const count = h('span', { class: 'muted' }, '');
  const list = h('ol', { class: 'messages', 'aria-label': 'Messages, newest first', 'aria-live': 'off' });
  const form = h(
    'form',
    { class: 'card form' },
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, h('label', { for: 'tail-filter' }, 'Topic filter'), filter),
      h('div', { class: 'grow' }, h('label', { for: 'tail-url' }, 'WebSocket URL'), url)),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, h('label', { for: 'tail-user' }, 'MQTT user name (optional)'), user),
      h('div', { class: 'grow' }, h('label', { for: 'tail-pass' }, 'MQTT password (optional)'), pass)),
    h('div', { class: 'row' }, start, stop, clear, count),
  );
  const empty = emptyState('No messages yet. Subscribe, then publish something.');
  fill(root, pageHeader('Live tail'), form, status, h('section', { class: 'card' }, h('h2', {}, 'Messages'), empty, list));

  let client: MqttClient | null = null;
  let received = 0;
  const end = () => {
    client?.end(true);
    client = null;
    start.disabled = false;
    stop.disabled = true;
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    end();
    const f = filter.value.trim();
    fill(status, h('p', {}, `Connecting to ${url.value}…`));
    start.disabled = true;
    stop.disabled = false;
    const c = mqtt.connect(url.value, {
      clientId: `thingmq-console-${Math.random().toString(16).slice(2, 10)}`,
      protocolVersion: 5,
      clean: true,
      reconnectPeriod: 3000,
      connectTimeout: 10_000,
      username: user.value || undefined,
      password: pass.value || undefined,
    });
    client = c;
    c.on('connect', () => {
      c.subscribe(f, { qos: 0 }, (err, granted) => {
        if (err) fill(status, errorBox(`Subscribe failed: ${err.message}`));
        else if (granted?.some((g) => g.qos >= 0x80)) fill(status, errorBox(`The broker refused the subscription to “${f}” (not allowed or invalid).`));
        else fill(status, h('p', { class: 'ok' }, `Subscribed to “${f}”.`));
      });
    });
    c.on('error', (err) => fill(status, errorBox(`MQTT error: ${err.message}`)));
    c.on('offline', () => fill(status, errorBox('Disconnected; retrying…')));
    c.on('message', (topic, payload, packet) => {
      received++;
      empty.remove();
      const li = h(
        'li',
        {},
        h('div', { class: 'msg-head' },
          h('code', { class: 'topic' }, topic),
          h('span', { class: 'muted' }, `QoS ${packet.qos}${packet.retain ? ' · retained' : ''} · ${new Date().toLocaleTimeString()}`)),
        h('pre', { class: 'payload' }, shown(payload)),
      );
      list.prepend(li);
      while (list.children.length > KEEP) list.lastElementChild?.remove();
      count.textContent = `${received} received`;
    });
  });
  stop.addEventListener('click', () => {
    end();
    fill(status, h('p', {}, 'Stopped.'));
  });
  clear.addEventListener('click', () => {
    list.replaceChildren();
    received = 0;
    count.textContent = '';
  });
  return end;
}
