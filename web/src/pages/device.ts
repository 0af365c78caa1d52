// One device: live property values, controls generated from the product's thing model (TSL),
// service forms, history charts, the event log and the online/offline log.
//
// Live values come over MQTT-over-WebSocket (the listener /api/v1/endpoints reports): the
// console subscribes to the device's property and event reports, as the live tail does. When
// the server has no WebSocket listener, the connection fails or the broker wants credentials
// (a form asks for them, see live.ts), the page polls the shadow every 2 s instead; a badge
// says which. Also: the device's tags (editable) and how to connect it, with a secret reset.
// Loaded lazily (MQTT.js and uPlot are most of the bundle).

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api, ApiError, devicePath, type DataType, type Device, type Param, type ProductDetail, type Shadow, type TslProperty, type TslService, type WsEndpoint } from '../api';
import { h, fill, errorBox, emptyState, pageHeader, since, canChange } from '../ui';
import { connectLive, liveStatus, type LiveState } from '../live';
import { onlineBadge } from './devices';

const NUMERIC = ['int', 'float', 'double'];
const POLL_MS = 2000;
const KEEP_EVENTS = 200;

interface Endpoints {
  mqtt_ws: WsEndpoint[];
  mqtt?: { port: number; tls: boolean }[];
}

/** `key=value` lines to tags; throws a message naming the bad line. */
export function parseTags(text: string): Record<string, string> {
  const tags: Record<string, string> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const eq = line.indexOf('=');
    const k = eq < 0 ? '' : line.slice(0, eq).trim();
    if (!k) throw new Error(`Line ${i + 1}: “key=value” is needed`);
    if (k in tags) throw new Error(`Line ${i + 1}: tag “${k}” appears twice`);
    tags[k] = line.slice(eq + 1).trim();
  });
  return tags;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function specs(t: DataType): Record<string, unknown> {
  return t.specs && !Array.isArray(t.specs) ? t.specs : {};
}

/** A value as a person reads it: enum and bool labels, units. */
function show(t: DataType | undefined, v: unknown): string {
  if (v === undefined || v === null) return '—';
  if (!t) return typeof v === 'string' ? v : JSON.stringify(v);
  const s = specs(t);
  if (t.type === 'enum' || t.type === 'bool') {
    const label = s[String(typeof v === 'boolean' ? Number(v) : v)];
    return typeof label === 'string' ? `${label} (${String(v)})` : String(v);
  }
  if (NUMERIC.includes(t.type)) return typeof s.unit === 'string' ? `${String(v)} ${s.unit}` : String(v);
  if (t.type === 'date' && typeof v === 'number') return new Date(v).toLocaleString();
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Reads a report value in short (`21.5`) or full (`{value, time}`) form. */
function reportValue(v: unknown): { value: unknown; time: number } {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if ('value' in o && keys.every((k) => k === 'value' || k === 'time')) {
      return { value: o.value, time: typeof o.time === 'number' ? o.time : Date.now() };
    }
  }
  return { value: v, time: Date.now() };
}

/** An input for one TSL parameter; `read()` gives the typed value or throws a message. */
function paramInput(id: string, p: Param, initial?: unknown): { el: HTMLElement; read: () => unknown } {
  const t = p.dataType;
  const s = specs(t);
  if (t.type === 'bool') {
    const input = h('input', { id, type: 'checkbox', role: 'switch' });
    input.checked = initial === 1 || initial === true;
    return { el: input, read: () => (input.checked ? 1 : 0) };
  }
  if (t.type === 'enum') {
    const sel = h('select', { id }, Object.entries(s).map(([k, label]) => h('option', { value: k, selected: String(initial) === k }, `${String(label)} (${k})`)));
    return { el: sel, read: () => Number(sel.value) };
  }
  if (NUMERIC.includes(t.type)) {
    const min = s.min !== undefined ? Number(s.min) : NaN;
    const max = s.max !== undefined ? Number(s.max) : NaN;
    const step = s.step !== undefined ? String(s.step) : t.type === 'int' ? '1' : 'any';
    const isInt = t.type === 'int';
    const parse = (raw: string) => {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw new Error(`${p.identifier}: a number is needed`);
      if (isInt && !Number.isInteger(n)) throw new Error(`${p.identifier}: a whole number is needed`);
      return n;
    };
    if (Number.isFinite(min) && Number.isFinite(max)) {
      const start = typeof initial === 'number' ? initial : min;
      const range = h('input', { id, type: 'range', min, max, step, value: start });
      const out = h('output', { for: id }, show(t, start));
      range.addEventListener('input', () => (out.textContent = show(t, Number(range.value))));
      return { el: h('span', { class: 'slider' }, range, out), read: () => parse(range.value) };
    }
    const input = h('input', { id, type: 'number', step, value: typeof initial === 'number' ? initial : '' });
    return { el: input, read: () => parse(input.value) };
  }
  if (t.type === 'text' || t.type === 'date') {
    const input = h('input', { id, value: initial === undefined ? '' : String(initial), autocomplete: 'off' });
    return {
      el: input,
      read: () => {
        if (t.type !== 'date') return input.value;
        const n = Number(input.value);
        if (!Number.isInteger(n)) throw new Error(`${p.identifier}: a time in UTC milliseconds is needed`);
        return n;
      },
    };
  }
  // Structs and arrays: JSON.
  const area = h('textarea', { id, rows: 3, spellcheck: 'false' });
  area.value = initial === undefined ? '' : JSON.stringify(initial);
  return {
    el: area,
    read: () => {
      try {
        return JSON.parse(area.value);
      } catch {
        throw new Error(`${p.identifier}: JSON is needed (${t.type})`);
      }
    },
  };
}

/** POST returning the HTTP status along with the body (202 and 200 mean different things). */
async function post(path: string, body: unknown): Promise<{ status: number; data: unknown }> {
  const resp = await fetch(path, {
    method: 'POST',
    headers: { 'X-Requested-With': 'thingmq', Accept: 'application/json', 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
  const text = await resp.text();
  let data: unknown = text;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    // Kept as text.
  }
  if (!resp.ok) {
    const e = (data ?? {}) as { code?: string; message?: string };
    throw new ApiError(resp.status, e.code ?? 'error', e.message ?? `HTTP ${resp.status}`);
  }
  return { status: resp.status, data };
}

export async function devicePage(root: HTMLElement, param: string) {
  const slash = param.indexOf('/');
  const pk = param.slice(0, slash);
  const dn = param.slice(slash + 1);
  const base = devicePath(pk, dn);
  const status = h('div', {});
  const loading = h('p', { class: 'muted', role: 'status' }, 'Loading…');
  fill(root, h('p', {}, h('a', { href: '#/devices' }, '‹ All devices')), pageHeader(`Device ${dn}`), status, loading);
  // Declared before the first await so the polling fallback can use it from the start.
  const liveLine = liveStatus('device', 'Showing the shadow, refreshed every 2 s.', () => connect());

  let device: Device;
  let product: ProductDetail;
  let shadow: Shadow;
  try {
    [device, product, shadow] = await Promise.all([
      api<Device>(base),
      api<ProductDetail>(`/api/v1/products/${encodeURIComponent(pk)}`),
      api<Shadow>(`${base}/shadow`),
    ]);
  } catch (e) {
    fill(status, errorBox((e as Error).message));
    loading.remove();
    return;
  }
  const props: TslProperty[] = product.tsl.properties ?? [];
  // `set` and `get` are the standard property services every exported model lists: the
  // controls are their form.
  const services: TslService[] = (product.tsl.services ?? []).filter((s) => s.identifier !== 'set' && s.identifier !== 'get');
  const propType = new Map(props.map((p) => [p.identifier, p.dataType]));
  const timers: number[] = [];
  let live: { end: () => void } | null = null;
  let plot: uPlot | null = null;
  let endpoints: Endpoints = { mqtt_ws: [] };
  try {
    endpoints = await api<Endpoints>('/api/v1/endpoints');
  } catch {
    // No connection details and no live values: the page polls below.
  }

  // -- facts ------------------------------------------------------------------------------
  const badge = h('span', {}, onlineBadge(device));
  const facts = h(
    'section',
    { class: 'card' },
    h('dl', { class: 'facts' },
      h('dt', {}, 'Product'), h('dd', {}, h('a', { href: `#/products/${encodeURIComponent(pk)}` }, product.name === pk ? pk : `${product.name} (${pk})`)),
      h('dt', {}, 'State'), h('dd', {}, badge),
      h('dt', {}, 'MQTT user name'), h('dd', {}, h('code', {}, `${dn}&${pk}`)),
      h('dt', {}, 'Last online'), h('dd', {}, device.lastOnlineMs ? since(device.lastOnlineMs) : '—'),
      h('dt', {}, 'Last address'), h('dd', {}, device.lastIp ?? '—'),
      h('dt', {}, 'Tags'), h('dd', { 'data-field': 'tags' }, tagText(device.tags))),
  );

  // -- tags and connection ----------------------------------------------------------------
  const tagsCard = tagsEditor(base, device, (d) => {
    device = d;
    const dd = facts.querySelector('[data-field="tags"]');
    if (dd) dd.textContent = tagText(d.tags);
  });
  const connectCard = connectionCard(base, pk, dn, endpoints);

  // -- live property values ---------------------------------------------------------------
  const valueCells = new Map<string, { value: HTMLElement; time: HTMLElement }>();
  const propRows = props.map((p) => {
    const value = h('td', { 'data-label': 'Value', 'data-property': p.identifier });
    const time = h('td', { 'data-label': 'Updated' });
    valueCells.set(p.identifier, { value, time });
    const readOnly = (p.accessMode ?? 'rw') === 'r';
    return h('tr', {}, h('th', { scope: 'row', 'data-label': 'Property' }, p.name ?? p.identifier, h('br'), h('code', { class: 'muted' }, p.identifier), readOnly ? h('span', { class: 'muted' }, ' · read-only') : null), value, time);
  });
  const setValue = (id: string, value: unknown, time: number) => {
    const cells = valueCells.get(id);
    if (!cells) return;
    const text = show(propType.get(id), value);
    if (cells.value.textContent !== text) {
      cells.value.textContent = text;
      cells.value.classList.remove('flash');
      void cells.value.offsetWidth; // restarts the highlight animation
      cells.value.classList.add('flash');
    }
    cells.time.textContent = new Date(time).toLocaleTimeString();
  };
  const applyShadow = (s: Shadow) => {
    for (const [id, r] of Object.entries(s.reported)) setValue(id, r.value, r.time);
  };
  applyShadow(shadow);
  const valuesCard = h(
    'section',
    { class: 'card', 'aria-labelledby': 'values-head' },
    h('h2', { id: 'values-head' }, 'Properties'),
    props.length === 0
      ? emptyState('The thing model has no properties.')
      : h('table', { class: 'table' },
          h('thead', {}, h('tr', {}, ['Property', 'Value', 'Updated'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, propRows)),
  );

  // -- controls ---------------------------------------------------------------------------
  const writable = props.filter((p) => (p.accessMode ?? 'rw') === 'rw');
  const controls = h('section', { class: 'card', 'aria-labelledby': 'controls-head' }, h('h2', { id: 'controls-head' }, 'Controls'));
  if (!canChange()) controls.append(emptyState('Viewers cannot change devices.'));
  else if (writable.length === 0) controls.append(emptyState('No writable properties.'));
  for (const p of writable) {
    if (!canChange()) break;
    const id = `set-${p.identifier}`;
    const input = paramInput(id, p, shadow.reported[p.identifier]?.value);
    const answer = h('span', { class: 'answer', role: 'status', 'data-answer': p.identifier });
    const send = async () => {
      let value: unknown;
      try {
        value = input.read();
      } catch (e) {
        fill(answer, errorBox((e as Error).message));
        return;
      }
      fill(answer, h('span', { class: 'muted' }, 'Sending…'));
      try {
        const r = await post(`${base}/properties`, { [p.identifier]: value });
        if (r.status === 202) fill(answer, h('span', { class: 'muted' }, `Device offline: stored as desired (202) ${JSON.stringify(r.data)}`));
        else {
          const reply = (r.data as { reply?: { code?: number; message?: string } }).reply ?? {};
          fill(answer, h('span', { class: reply.code === 200 ? 'ok' : 'error' }, `Device answered: code ${reply.code ?? '?'}${reply.message ? ` (${reply.message})` : ''}`));
        }
      } catch (e) {
        const err = e as ApiError;
        fill(answer, errorBox(err.status === 504 ? `No answer from the device in time (504): ${err.message}` : `Refused (${err.status}): ${err.message}`));
      }
    };
    const isSwitch = p.dataType.type === 'bool';
    const control = isSwitch
      ? h('div', { class: 'control' }, h('label', { class: 'check', for: id }, input.el, `${p.name ?? p.identifier}`), answer)
      : h('form', { class: 'control row', onsubmit: (e: Event) => { e.preventDefault(); void send(); } },
          h('div', { class: 'grow' }, h('label', { for: id }, p.name ?? p.identifier), input.el),
          h('button', { type: 'submit', 'aria-label': `Set ${p.name ?? p.identifier}` }, 'Set'),
          answer);
    if (isSwitch) input.el.addEventListener('change', () => void send());
    controls.append(control);
  }

  // -- services ---------------------------------------------------------------------------
  const servicesCard = h('section', { class: 'card', 'aria-labelledby': 'services-head' }, h('h2', { id: 'services-head' }, 'Services'));
  if (services.length === 0) servicesCard.append(emptyState('The thing model has no services.'));
  else if (!canChange()) servicesCard.append(emptyState('Viewers cannot call services.'));
  for (const svc of canChange() ? services : []) {
    const inputs = (svc.inputData ?? []).map((p) => ({ p, ...paramInput(`svc-${svc.identifier}-${p.identifier}`, p) }));
    const output = h('div', { role: 'status', 'data-output': svc.identifier });
    const form = h(
      'form',
      { class: 'form service', 'aria-label': `Service ${svc.name ?? svc.identifier}` },
      h('h3', {}, `${svc.name ?? svc.identifier} `, h('span', { class: 'muted' }, `(${svc.identifier}, ${svc.callType ?? 'async'})`)),
      inputs.map((i) => h('div', {}, h('label', { for: `svc-${svc.identifier}-${i.p.identifier}` }, i.p.name ?? i.p.identifier), i.el)),
      h('div', { class: 'row' }, h('button', { type: 'submit' }, `Call ${svc.name ?? svc.identifier}`)),
      output,
    );
    const outTypes = new Map((svc.outputData ?? []).map((p) => [p.identifier, p]));
    const showOutput = (title: string, out: unknown) => {
      const o = out && typeof out === 'object' ? Object.entries(out as Record<string, unknown>) : [];
      fill(output, h('p', { class: 'ok' }, title), o.length
        ? h('dl', { class: 'facts' }, o.flatMap(([k, v]) => [h('dt', {}, outTypes.get(k)?.name ?? k), h('dd', {}, show(outTypes.get(k)?.dataType, v))]))
        : h('pre', { class: 'payload' }, JSON.stringify(out ?? {}, null, 2)));
    };
    const pollCall = (callId: string) => {
      let tries = 0;
      const t = window.setInterval(async () => {
        tries++;
        try {
          const c = await api<{ status: string; output?: unknown; code?: number }>(`${base}/calls/${encodeURIComponent(callId)}`);
          if (c.status !== 'pending') {
            window.clearInterval(t);
            showOutput(`Call ${callId}: ${c.status}${c.code !== undefined ? ` (code ${c.code})` : ''}`, c.output);
          } else if (tries > 60) {
            window.clearInterval(t);
            fill(output, errorBox(`Call ${callId} still pending after 2 minutes.`));
          }
        } catch (e) {
          window.clearInterval(t);
          fill(output, errorBox(`Cannot follow call ${callId}: ${(e as Error).message}`));
        }
      }, POLL_MS);
      timers.push(t);
    };
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const args: Record<string, unknown> = {};
      try {
        for (const i of inputs) args[i.p.identifier] = i.read();
      } catch (e) {
        fill(output, errorBox((e as Error).message));
        return;
      }
      fill(output, h('p', { class: 'muted' }, 'Calling…'));
      try {
        const r = await post(`${base}/services/${encodeURIComponent(svc.identifier)}`, args);
        if (r.status === 202) {
          const callId = (r.data as { callId: string }).callId;
          fill(output, h('p', { class: 'muted' }, `Started call ${callId}; waiting for the device…`));
          pollCall(callId);
        } else {
          const reply = (r.data as { reply?: { code?: number; data?: unknown; message?: string } }).reply ?? {};
          showOutput(`The device answered (code ${reply.code ?? '?'}${reply.message ? `, ${reply.message}` : ''}):`, reply.data);
        }
      } catch (e) {
        const err = e as ApiError;
        fill(output, errorBox(err.status === 504 ? `No answer from the device in time (504): ${err.message}` : `Refused (${err.status}): ${err.message}`));
      }
    });
    servicesCard.append(form);
  }

  // -- history ----------------------------------------------------------------------------
  const numeric = props.filter((p) => NUMERIC.includes(p.dataType.type) || p.dataType.type === 'bool' || p.dataType.type === 'enum');
  const histProp = h('select', { id: 'history-property' }, numeric.map((p) => h('option', { value: p.identifier }, p.name ?? p.identifier)));
  const histRange = h(
    'select',
    { id: 'history-range' },
    h('option', { value: String(15 * 60_000) }, 'last 15 minutes'),
    h('option', { value: String(3600_000) }, 'last hour'),
    h('option', { value: String(24 * 3600_000), selected: true }, 'last 24 hours'),
    h('option', { value: String(7 * 24 * 3600_000) }, 'last 7 days'),
  );
  const chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': 'History chart' });
  const histStatus = h('div', {});
  const historyCard = h(
    'section',
    { class: 'card', 'aria-labelledby': 'history-head' },
    h('h2', { id: 'history-head' }, 'History'),
    numeric.length === 0
      ? emptyState('No numeric properties to chart.')
      : [
          h('form', { class: 'row', onsubmit: (e: Event) => { e.preventDefault(); void drawHistory(); } },
            h('div', { class: 'grow' }, h('label', { for: 'history-property' }, 'Property'), histProp),
            h('div', { class: 'grow' }, h('label', { for: 'history-range' }, 'Range'), histRange),
            h('button', { type: 'submit' }, 'Show history')),
          histStatus,
          chartBox,
        ],
  );
  const drawHistory = async () => {
    const id = histProp.value;
    const span = Number(histRange.value);
    const to = Date.now() + 1;
    const from = to - span;
    // Raw points for short ranges; for long ones buckets of about 300 per range, so the answer
    // stays small whatever the report rate.
    const bucket = span > 3600_000 ? Math.max(1000, Math.round(span / 300)) : 0;
    const q = new URLSearchParams({ from: String(from), to: String(to), limit: '5000' });
    if (bucket) q.set('bucket_ms', String(bucket));
    let xs: number[] = [];
    let ys: (number | null)[] = [];
    let lo: (number | null)[] | null = null;
    let hi: (number | null)[] | null = null;
    try {
      const r = await api<{ points?: { time: number; value: unknown }[]; buckets?: { start: number; avg: number | null; min: number | null; max: number | null }[] }>(
        `${base}/properties/${encodeURIComponent(id)}/history?${q}`,
      );
      if (r.buckets) {
        xs = r.buckets.map((b) => b.start / 1000);
        ys = r.buckets.map((b) => b.avg);
        lo = r.buckets.map((b) => b.min);
        hi = r.buckets.map((b) => b.max);
      } else {
        const pts = (r.points ?? []).filter((p) => typeof p.value === 'number' || typeof p.value === 'boolean');
        xs = pts.map((p) => p.time / 1000);
        ys = pts.map((p) => Number(p.value));
      }
    } catch (e) {
      fill(histStatus, errorBox(`Cannot load the history: ${(e as Error).message}`));
      return;
    }
    plot?.destroy();
    plot = null;
    chartBox.replaceChildren();
    if (xs.length === 0) {
      fill(histStatus, emptyState('No values in this range.'));
      return;
    }
    const name = props.find((p) => p.identifier === id)?.name ?? id;
    fill(histStatus, h('p', { class: 'muted' }, bucket ? `${plural(xs.length, 'bucket')} of ${Math.round(bucket / 1000)} s (average, min, max)` : plural(xs.length, 'value')));
    const series: uPlot.Series[] = [{}, { label: bucket ? `${name} (avg)` : name, stroke: '#2563eb', width: 2, points: { show: xs.length < 60 } }];
    const data: uPlot.AlignedData = [xs, ys];
    if (lo && hi) {
      series.push({ label: 'min', stroke: '#93c5fd', width: 1 }, { label: 'max', stroke: '#1e3a8a', width: 1 });
      data.push(lo, hi);
    }
    chartBox.setAttribute('aria-label', `History of ${name}`);
    // The x scale is the asked range, not the data's: a few points must not stretch to years.
    const range: uPlot.Range.MinMax = [from / 1000, to / 1000];
    plot = new uPlot({ width: Math.max(chartBox.clientWidth, 280), height: 240, series, scales: { x: { time: true, range: () => range } } }, data, chartBox);
  };
  const onResize = () => plot?.setSize({ width: Math.max(chartBox.clientWidth, 280), height: 240 });
  window.addEventListener('resize', onResize);

  // -- events and online log --------------------------------------------------------------
  const eventList = h('ol', { class: 'messages', 'aria-label': 'Events, newest first' });
  const eventsEmpty = emptyState('No events in the last 24 hours.');
  const eventFilter = h('select', { id: 'event-type' },
    h('option', { value: '' }, 'all types'),
    ['info', 'alert', 'error'].map((t) => h('option', { value: t }, t)));
  const eventsCard = h('section', { class: 'card', 'aria-labelledby': 'events-head' },
    h('h2', { id: 'events-head' }, 'Events'),
    h('div', { class: 'row' }, h('div', {}, h('label', { for: 'event-type' }, 'Event type'), eventFilter)),
    eventsEmpty, eventList);
  const eventTypes = new Map((product.tsl.events ?? []).map((e) => [e.identifier, e]));
  const addEvent = (identifier: string, type: string | undefined, time: number, output: unknown, prepend: boolean) => {
    const shownType = type ?? eventTypes.get(identifier)?.type ?? 'info';
    // Live events of other types than the chosen one are not shown (the list is filtered).
    if (prepend && eventFilter.value && shownType !== eventFilter.value) return;
    eventsEmpty.remove();
    const li = h('li', {},
      h('div', { class: 'msg-head' },
        h('strong', {}, eventTypes.get(identifier)?.name ?? identifier, ' ', h('span', { class: `badge ${shownType === 'info' ? 'on' : 'warn'}` }, shownType)),
        h('span', { class: 'muted' }, new Date(time).toLocaleString())),
      h('pre', { class: 'payload' }, JSON.stringify(output)));
    if (prepend) eventList.prepend(li);
    else eventList.append(li);
    while (eventList.children.length > KEEP_EVENTS) eventList.lastElementChild?.remove();
  };
  const statusList = h('tbody', {});
  const logCard = h('section', { class: 'card', 'aria-labelledby': 'log-head' }, h('h2', { id: 'log-head' }, 'Online and offline'));
  const loadLogs = async () => {
    try {
      const q = new URLSearchParams({ limit: '100' });
      if (eventFilter.value) q.set('type', eventFilter.value);
      const [ev, log] = await Promise.all([
        api<{ events: { identifier: string; type: string; time: number; output: unknown }[] }>(`${base}/events?${q}`),
        api<{ status: { time: number; online: boolean; reason: string | null; ip: string | null }[] }>(`${base}/log`),
      ]);
      eventList.replaceChildren();
      const newest = [...ev.events].sort((a, b) => b.time - a.time);
      for (const e of newest) addEvent(e.identifier, e.type, e.time, e.output, false);
      eventsEmpty.textContent = eventFilter.value ? `No ${eventFilter.value} events in the last 24 hours.` : 'No events in the last 24 hours.';
      if (newest.length === 0) eventList.before(eventsEmpty);
      const rows = [...log.status].sort((a, b) => b.time - a.time).slice(0, 100);
      fill(statusList, rows.map((s) => h('tr', {},
        h('td', { 'data-label': 'Time' }, new Date(s.time).toLocaleString()),
        h('td', { 'data-label': 'State' }, h('span', { class: s.online ? 'badge on' : 'badge off' }, s.online ? 'online' : 'offline')),
        h('td', { 'data-label': 'Reason' }, s.reason ?? '—'),
        h('td', { 'data-label': 'Address' }, s.ip ?? '—'))));
      fill(logCard, h('h2', { id: 'log-head' }, 'Online and offline'), rows.length === 0
        ? emptyState('No connections in the last 24 hours.')
        : h('table', { class: 'table' }, h('thead', {}, h('tr', {}, ['Time', 'State', 'Reason', 'Address'].map((t) => h('th', { scope: 'col' }, t)))), statusList));
    } catch (e) {
      fill(logCard, h('h2', { id: 'log-head' }, 'Online and offline'), errorBox(`Cannot load the logs: ${(e as Error).message}`));
    }
  };

  fill(
    root,
    h('p', {}, h('a', { href: '#/devices' }, '‹ All devices')),
    pageHeader(`Device ${dn}`),
    status,
    facts,
    liveLine.el,
    h('div', { class: 'device-grid' }, valuesCard, h('div', {}, controls, servicesCard)),
    historyCard,
    eventsCard,
    logCard,
    h('div', { class: 'device-grid' }, tagsCard, connectCard),
  );
  void loadLogs();
  eventFilter.addEventListener('change', () => void loadLogs());
  if (numeric.length > 0) void drawHistory();

  // The online badge and the logs change rarely: a slow refresh is enough.
  timers.push(window.setInterval(async () => {
    try {
      fill(badge, onlineBadge(await api<Device>(base)));
    } catch {
      // The next tick retries; the page keeps what it shows.
    }
  }, 5000));

  // -- live updates -----------------------------------------------------------------------
  let polling = 0;
  const startPolling = () => {
    if (polling) return;
    polling = window.setInterval(async () => {
      try {
        applyShadow(await api<Shadow>(`${base}/shadow`));
      } catch {
        // Retried on the next tick.
      }
    }, POLL_MS);
    timers.push(polling);
  };
  const stopPolling = () => {
    window.clearInterval(polling);
    polling = 0;
  };
  const prefix = `/sys/${pk}/${dn}/thing/event/`;
  const onMessage = (topic: string, payload: Uint8Array) => {
    let msg: { params?: Record<string, unknown> };
    try {
      msg = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      return;
    }
    const params = msg.params ?? {};
    if (topic === `${prefix}property/post`) {
      for (const [id, v] of Object.entries(params)) {
        const r = reportValue(v);
        setValue(id, r.value, r.time);
      }
    } else {
      const id = topic.slice(prefix.length, -'/post'.length);
      const p = params as { value?: unknown; time?: number };
      const out = p && typeof p === 'object' && 'value' in p ? p.value : params;
      addEvent(id, eventTypes.get(id)?.type, typeof p.time === 'number' ? p.time : Date.now(), out, true);
    }
  };
  const onState = (st: LiveState) => {
    liveLine.set(st);
    if (st.kind !== 'live') {
      startPolling();
      return;
    }
    stopPolling();
    // Values reported between the first load and the subscription.
    void api<Shadow>(`${base}/shadow`).then(applyShadow, () => {});
  };
  const connect = () => {
    live?.end();
    live = null;
    if (endpoints.mqtt_ws.length === 0) {
      onState({ kind: 'polling', reason: 'No MQTT-over-WebSocket listener.' });
      return;
    }
    live = connectLive({ endpoint: endpoints.mqtt_ws[0], filters: [`${prefix}property/post`, `${prefix}+/post`], onMessage, onState });
  };
  connect();

  return () => {
    for (const t of timers) window.clearInterval(t);
    window.removeEventListener('resize', onResize);
    live?.end();
    plot?.destroy();
  };
}

function tagText(tags: Record<string, string>): string {
  return Object.entries(tags).map(([k, v]) => `${k}=${v}`).join(', ') || '—';
}

/** The device's tags: a `key=value` per line editor for admins (PATCH), the list for viewers. */
function tagsEditor(base: string, device: Device, saved: (d: Device) => void): HTMLElement {
  const card = h('section', { class: 'card', 'aria-labelledby': 'tags-head' }, h('h2', { id: 'tags-head' }, 'Tags'));
  if (!canChange()) {
    card.append(Object.keys(device.tags).length === 0 ? emptyState('No tags.') : h('p', {}, tagText(device.tags)));
    return card;
  }
  const area = h('textarea', { id: 'device-tags', rows: 4, spellcheck: 'false', placeholder: 'room=hall\nfloor=2' });
  area.value = Object.entries(device.tags).map(([k, v]) => `${k}=${v}`).join('\n');
  const result = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'form' },
    h('label', { for: 'device-tags' }, 'Tags (one key=value per line)'),
    area,
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save tags')),
    result);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let tags: Record<string, string>;
    try {
      tags = parseTags(area.value);
    } catch (e) {
      fill(result, errorBox((e as Error).message));
      area.focus();
      return;
    }
    try {
      const d = await api<Device>(base, { method: 'PATCH', body: { tags } });
      saved(d);
      fill(result, h('p', { class: 'ok', role: 'status' }, `Tags saved (${Object.keys(d.tags).length}).`));
    } catch (e) {
      fill(result, errorBox(`Cannot save the tags: ${(e as Error).message}`));
    }
  });
  card.append(form);
  return card;
}

/** How a device connects: host, ports, user name, client id; a secret reset for admins. */
function connectionCard(base: string, pk: string, dn: string, endpoints: Endpoints): HTMLElement {
  const host = location.hostname;
  const ports = (endpoints.mqtt ?? []).map((e) => `${e.port} (${e.tls ? 'MQTT over TLS' : 'MQTT'})`);
  const ws = endpoints.mqtt_ws.map((e) => `${e.port}${e.path} (${e.tls ? 'wss' : 'ws'})`);
  const secretBox = h('div', { 'aria-live': 'polite' });
  const reset = async () => {
    if (!confirm(`Give “${dn}” a new secret? The old one stops working at once and the device is disconnected until it uses the new one.`)) return;
    try {
      const r = await api<{ deviceSecret: string }>(`${base}/secret`, { method: 'POST' });
      fill(secretBox,
        h('p', { class: 'ok', role: 'status' }, 'New secret (shown only now: copy it to the device):'),
        h('p', {}, h('code', { class: 'device-secret', 'aria-label': 'New device secret' }, r.deviceSecret)));
    } catch (e) {
      fill(secretBox, errorBox(`Cannot reset the secret: ${(e as Error).message}`));
    }
  };
  return h('section', { class: 'card', 'aria-labelledby': 'connect-head' },
    h('h2', { id: 'connect-head' }, 'Connecting the device'),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Host'), h('dd', {}, h('code', {}, host), h('span', { class: 'muted' }, ' (as this console is reached; devices may need another name)')),
      h('dt', {}, 'MQTT port'), h('dd', { 'data-field': 'mqtt-ports' }, ports.join(', ') || '—'),
      ws.length ? [h('dt', {}, 'WebSocket'), h('dd', {}, ws.join(', '))] : null,
      h('dt', {}, 'User name'), h('dd', {}, h('code', {}, `${dn}&${pk}`)),
      h('dt', {}, 'Client id'), h('dd', {}, 'any without “|”, e.g. ', h('code', {}, dn), '; or signed: ', h('code', {}, `${dn}|securemode=3,signmethod=hmacsha256,timestamp=…|`)),
      h('dt', {}, 'Password'), h('dd', {}, 'the device secret, or the hex HMAC-SHA256 keyed by it of ', h('code', {}, `clientId${dn}deviceName${dn}productKey${pk}timestamp…`))),
    canChange()
      ? [h('div', { class: 'actions' }, h('button', { type: 'button', class: 'danger', onclick: () => void reset() }, 'Reset secret')), secretBox]
      : h('p', { class: 'muted' }, 'The secret was shown when the device was registered; an admin can reset it.'));
}
