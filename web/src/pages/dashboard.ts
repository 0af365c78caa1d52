// Broker figures and a message-rate chart, from /api/v1/overview polled every few seconds
// (rates are differences of the received/sent counters between two polls).

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api, type Overview } from '../api';
import { h, fill, errorBox, duration, pageHeader } from '../ui';

const POLL_MS = 3000;
const POINTS = 60;

function counter(o: Overview, name: string): number {
  return o.counters.find((c) => c.name === name)?.value ?? 0;
}

export function dashboardPage(root: HTMLElement) {
  const stats = h('div', { class: 'stats' });
  const status = h('div', {});
  const chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': 'Messages per second, received and sent, over the last three minutes' });
  fill(
    root,
    pageHeader('Dashboard'),
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

  const poll = async () => {
    try {
      const o = await api<Overview>('/api/v1/overview');
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
      const rx = counter(o, 'messages_received_total');
      const tx = counter(o, 'messages_sent_total');
      if (prev) {
        const dt = Math.max(now - prev.t, 0.001);
        times.push(now);
        inRate.push(Math.max(0, (rx - prev.rx) / dt));
        outRate.push(Math.max(0, (tx - prev.tx) / dt));
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
      prev = { t: now, rx, tx };
    } catch (e) {
      fill(status, errorBox(`Cannot load the overview: ${(e as Error).message}`));
    }
  };
  void poll();
  const timer = window.setInterval(() => void poll(), POLL_MS);
  return () => {
    window.clearInterval(timer);
    window.removeEventListener('resize', onResize);
    plot?.destroy();
  };
}
