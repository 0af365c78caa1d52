// Broker figures and a message-rate chart. Pushed: the broker's retained `$SYS/broker/...`
// topics over MQTT-over-WebSocket (every `[sys] interval_secs`). Polled instead, every few
// seconds from /api/v1/overview, when there is no WebSocket listener, `$SYS` is off, or the
// broker refuses the connection or the subscription (a badge says which). Rates are
// differences of the received/sent counters between two samples.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api, type Overview, type WsEndpoint } from '../api';
import { h, fill, errorBox, duration, pageHeader } from '../ui';
import { connectLive, liveStatus, type LiveState } from '../live';

const POLL_MS = 3000;
const POINTS = 60;

function counter(o: Overview, name: string): number {
  return o.counters.find((c) => c.name === name)?.value ?? 0;
}

/** The figures the dashboard shows, whichever way they came. */
interface Figures {
  connections: number;
  sessions: number;
  subscriptions: number;
  retained: number;
  uptime_secs: number;
  version: string;
  rx: number;
  tx: number;
}

/** `$SYS/broker/<topic>` → the figure it carries. */
const SYS_TOPICS: Record<string, (f: Partial<Figures>, v: string) => void> = {
  version: (f, v) => (f.version = v),
  uptime: (f, v) => (f.uptime_secs = parseInt(v, 10)),
  'clients/connected': (f, v) => (f.connections = Number(v)),
  'clients/total': (f, v) => (f.sessions = Number(v)),
  'subscriptions/count': (f, v) => (f.subscriptions = Number(v)),
  'retained messages/count': (f, v) => (f.retained = Number(v)),
  'messages/received': (f, v) => (f.rx = Number(v)),
  'messages/sent': (f, v) => (f.tx = Number(v)),
};

export function dashboardPage(root: HTMLElement) {
  const stats = h('div', { class: 'stats' });
  const status = h('div', {});
  const liveLine = liveStatus('dashboard', `Polling /api/v1/overview every ${POLL_MS / 1000} s.`, () => connect());
  const chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': 'Messages per second, received and sent, over the last three minutes' });
  fill(
    root,
    pageHeader('Dashboard'),
    liveLine.el,
    status,
    stats,
    h('section', { class: 'card' }, h('h2', {}, 'Message rate (per second)'), chartBox),
  );

  const times: number[] = [];
  const inRate: number[] = [];
  const outRate: number[] = [];
  let prev: { t: number; rx: number; tx: number } | null = null;
  let plot: uPlot | null = null;

  const makePlot = () => {
    const width = Math.max(chartBox.clientWidth, 280);
    plot = new uPlot(
      {
        width,
        height: 220,
        series: [
          {},
          { label: 'received', stroke: '#2563eb', width: 2 },
          { label: 'sent', stroke: '#16a34a', width: 2 },
        ],
        axes: [{}, { label: 'msg/s' }],
        scales: { x: { time: true } },
      },
      [times, inRate, outRate],
      chartBox,
    );
  };
  const onResize = () => plot?.setSize({ width: Math.max(chartBox.clientWidth, 280), height: 220 });
  window.addEventListener('resize', onResize);

  const stat = (label: string, value: string | number, id: string) =>
    h('div', { class: 'stat' }, h('span', { class: 'stat-label', id }, label), h('strong', { 'aria-labelledby': id }, String(value)));

  const show = (o: Figures) => {
    status.replaceChildren();
    fill(
      stats,
      stat('Connections', o.connections, 's-conn'),
      stat('Sessions', o.sessions, 's-sess'),
      stat('Subscriptions', o.subscriptions, 's-subs'),
      stat('Retained', o.retained, 's-ret'),
      stat('Uptime', duration(o.uptime_secs), 's-up'),
      stat('Version', o.version, 's-ver'),
    );
    const now = Date.now() / 1000;
    if (prev) {
      const dt = Math.max(now - prev.t, 0.001);
      times.push(now);
      inRate.push(Math.max(0, (o.rx - prev.rx) / dt));
      outRate.push(Math.max(0, (o.tx - prev.tx) / dt));
      if (times.length > POINTS) {
        times.shift();
        inRate.shift();
        outRate.shift();
      }
      // A line needs two points; until then the box says why it is empty.
      if (plot) plot.setData([times, inRate, outRate]);
      else if (times.length >= 2) {
        chartBox.replaceChildren();
        makePlot();
      }
    } else {
      chartBox.replaceChildren(h('p', { class: 'empty' }, 'Collecting data…'));
    }
    prev = { t: now, rx: o.rx, tx: o.tx };
  };

  const poll = async () => {
    try {
      const o = await api<Overview>('/api/v1/overview');
      show({ ...o, rx: counter(o, 'messages_received_total'), tx: counter(o, 'messages_sent_total') });
    } catch (e) {
      fill(status, errorBox(`Cannot load the overview: ${(e as Error).message}`));
    }
  };
  let timer = 0;
  const startPolling = () => {
    if (timer) return;
    void poll();
    timer = window.setInterval(() => void poll(), POLL_MS);
  };
  const stopPolling = () => {
    window.clearInterval(timer);
    timer = 0;
  };

  // Pushed figures: each $SYS topic is its own message; one sample is taken shortly after
  // the burst of a tick, once every figure is known.
  const sys: Partial<Figures> = {};
  let sample = 0;
  let live: { end: () => void } | null = null;
  let silence = 0;
  const onMessage = (topic: string, payload: Uint8Array) => {
    const apply = SYS_TOPICS[topic.replace(/^\$SYS\/broker\//, '')];
    if (!apply) return;
    apply(sys, new TextDecoder().decode(payload));
    if (sample) return;
    sample = window.setTimeout(() => {
      sample = 0;
      const f = sys as Figures;
      const complete = [f.connections, f.sessions, f.subscriptions, f.retained, f.uptime_secs, f.version, f.rx, f.tx].every((v) => v !== undefined);
      if (complete) show({ ...f });
    }, 250);
  };
  const onState = (st: LiveState) => {
    liveLine.set(st);
    window.clearTimeout(silence);
    if (st.kind !== 'live') {
      startPolling();
      return;
    }
    stopPolling();
    // Retained $SYS values arrive at once on subscribing; none means the broker does not
    // publish them.
    silence = window.setTimeout(() => {
      if (sys.rx === undefined) {
        live?.end();
        live = null;
        liveLine.set({ kind: 'polling', reason: 'The broker sent no $SYS figures.' });
        startPolling();
      }
    }, 3000);
  };
  const connect = () => {
    live?.end();
    live = null;
    void api<{ mqtt_ws: WsEndpoint[]; sys_interval_secs?: number }>('/api/v1/endpoints').then(
      (e) => {
        if (e.mqtt_ws.length === 0) return onState({ kind: 'polling', reason: 'No MQTT-over-WebSocket listener.' });
        if (e.sys_interval_secs === 0) return onState({ kind: 'polling', reason: 'The broker publishes no $SYS topics ([sys] interval_secs = 0).' });
        if (e.sys_interval_secs) liveLine.liveNote(`The broker publishes $SYS every ${e.sys_interval_secs} s.`);
        live = connectLive({ endpoint: e.mqtt_ws[0], filters: ['$SYS/broker/#'], onMessage, onState });
      },
      () => onState({ kind: 'polling', reason: 'Cannot learn the WebSocket endpoint.' }),
    );
  };
  connect();
  return () => {
    stopPolling();
    window.clearTimeout(sample);
    window.clearTimeout(silence);
    live?.end();
    window.removeEventListener('resize', onResize);
    plot?.destroy();
  };
}
