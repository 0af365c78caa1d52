// The console's push channel: MQTT over WebSocket to a listener /api/v1/endpoints reports,
// shared by the device page and the dashboard. Pages poll the REST API instead whenever this
// is not live, and say so with `liveBadge`.
//
// When the WebSocket listener wants MQTT credentials, `credentialsForm` asks for them; they
// are kept in sessionStorage (this tab only, gone when it closes), never in localStorage or
// on the server.

import mqtt, { type MqttClient } from 'mqtt';
import type { WsEndpoint } from './api';
import { h, fill } from './ui';

const STORAGE_KEY = 'thingmq.mqtt-credentials';

export interface Credentials {
  username: string;
  password: string;
}

export function savedCredentials(): Credentials | null {
  try {
    const v = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null') as Credentials | null;
    return v && typeof v.username === 'string' && typeof v.password === 'string' ? v : null;
  } catch {
    return null;
  }
}

export function saveCredentials(c: Credentials | null) {
  if (c) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(c));
  else sessionStorage.removeItem(STORAGE_KEY);
}

export function wsUrl(e: WsEndpoint): string {
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  return `${e.tls ? 'wss' : 'ws'}://${host}:${e.port}${e.path}`;
}

/** Where the page gets its figures from. */
export type LiveState =
  | { kind: 'connecting' }
  | { kind: 'live' }
  /** `credentials`: the broker refused the connection for its user name or password. */
  | { kind: 'polling'; reason: string; credentials?: boolean };

export interface LiveOptions {
  endpoint: WsEndpoint;
  /** Topic filters to subscribe to; a refused one ends the connection (polling). */
  filters: string[];
  onMessage: (topic: string, payload: Uint8Array) => void;
  onState: (s: LiveState) => void;
}

/** MQTT v5 CONNACK reasons (and v3 return codes MQTT.js maps) that mean "who are you?". */
const AUTH_CODES = new Set([4, 5, 0x86, 0x87, 0x8c]);

/** Connects and subscribes; `end()` closes for good, silently. */
export function connectLive(o: LiveOptions): { end: () => void } {
  const creds = savedCredentials();
  let ended = false;
  let client: MqttClient | null = mqtt.connect(wsUrl(o.endpoint), {
    clientId: `thingmq-console-${Math.random().toString(16).slice(2, 10)}`,
    protocolVersion: 5,
    clean: true,
    reconnectPeriod: 3000,
    connectTimeout: 10_000,
    username: creds?.username || undefined,
    password: creds?.password || undefined,
  });
  const state = (s: LiveState) => {
    if (!ended) o.onState(s);
  };
  const stop = (s: LiveState) => {
    state(s);
    ended = true;
    client?.end(true);
    client = null;
  };
  const c = client;
  state({ kind: 'connecting' });
  c.on('connect', () => {
    c.subscribe(o.filters, { qos: 0 }, (err, granted) => {
      if (err || granted?.some((g) => g.qos >= 0x80)) {
        stop({ kind: 'polling', reason: 'The broker refused the live subscription (ACL).', credentials: !creds });
        return;
      }
      state({ kind: 'live' });
    });
  });
  c.on('error', (err) => {
    const code = (err as { code?: number }).code;
    if (typeof code === 'number' && AUTH_CODES.has(code)) {
      stop({
        kind: 'polling',
        reason: creds ? 'The broker refused the MQTT user name or password.' : 'The MQTT-over-WebSocket listener needs a user name and password.',
        credentials: true,
      });
    } else {
      state({ kind: 'polling', reason: 'The live connection failed; retrying.' });
    }
  });
  c.on('offline', () => state({ kind: 'polling', reason: 'The live connection dropped; reconnecting.' }));
  c.on('message', (topic, payload) => o.onMessage(topic, payload));
  // Ending reports no state: the page is leaving or reconnecting, and must not start polling.
  return {
    end: () => {
      ended = true;
      client?.end(true);
      client = null;
    },
  };
}

/** "Live (push)" or "Polling": what the page's figures are based on, announced politely. */
export function liveBadge(s: LiveState, pollNote: string, liveNote = 'Updates arrive over MQTT as they happen.'): (HTMLElement | string)[] {
  if (s.kind === 'live') return [h('span', { class: 'badge on' }, 'Live (push)'), ' ', h('span', { class: 'muted' }, liveNote)];
  if (s.kind === 'connecting') return [h('span', { class: 'badge off' }, 'Connecting'), ' ', h('span', { class: 'muted' }, 'Connecting over MQTT-over-WebSocket…')];
  return [h('span', { class: 'badge warn' }, 'Polling'), ' ', h('span', { class: 'muted' }, `${s.reason} ${pollNote}`)];
}

/**
 * A small form for the MQTT user name and password of the live connection. `onChange` runs
 * after they are saved or forgotten (the page reconnects).
 */
export function credentialsForm(idPrefix: string, onChange: () => void): HTMLElement {
  const saved = savedCredentials();
  const user = h('input', { id: `${idPrefix}-mqtt-user`, autocomplete: 'username', spellcheck: 'false', value: saved?.username ?? '' });
  const pass = h('input', { id: `${idPrefix}-mqtt-pass`, type: 'password', autocomplete: 'current-password' });
  const note = h('p', { class: 'muted' }, 'Kept in this browser tab only (sessionStorage), for the live connection.');
  const forget = h('button', { type: 'button', class: 'secondary' }, 'Forget');
  forget.hidden = saved === null;
  forget.addEventListener('click', () => {
    saveCredentials(null);
    forget.hidden = true;
    user.value = '';
    pass.value = '';
    onChange();
  });
  const form = h(
    'form',
    { class: 'form live-credentials', 'aria-label': 'MQTT credentials for live updates' },
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, h('label', { for: `${idPrefix}-mqtt-user` }, 'MQTT user name'), user),
      h('div', { class: 'grow' }, h('label', { for: `${idPrefix}-mqtt-pass` }, 'MQTT password'), pass),
      h('button', { type: 'submit' }, 'Connect live'),
      forget),
    note,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    saveCredentials({ username: user.value.trim(), password: pass.value });
    forget.hidden = false;
    onChange();
  });
  return form;
}

/**
 * The live-state line of a page with its credentials form: `set` shows a state; the form
 * appears when the broker asked for credentials (or when some are saved, to change them).
 */
export function liveStatus(idPrefix: string, pollNote: string, reconnect: () => void) {
  const line = h('p', { role: 'status', class: 'live-state' });
  const formBox = h('div', {});
  const el = h('div', { class: 'card live' }, line, formBox);
  let note: string | undefined;
  return {
    el,
    /** What the badge says when live (default: updates arrive as they happen). */
    liveNote(text: string) {
      note = text;
    },
    set(s: LiveState) {
      fill(line, liveBadge(s, pollNote, note));
      const wantForm = (s.kind === 'polling' && s.credentials) || (s.kind === 'live' && savedCredentials() !== null);
      if (wantForm && formBox.childElementCount === 0) fill(formBox, credentialsForm(idPrefix, reconnect));
      else if (!wantForm && s.kind !== 'connecting') formBox.replaceChildren();
    },
  };
}
