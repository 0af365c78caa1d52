// A few DOM helpers: the console is small enough not to need a framework.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** An error message that screen readers announce. */
export function errorBox(message: string): HTMLElement {
  return h('p', { class: 'error', role: 'alert' }, message);
}

export function emptyState(message: string): HTMLElement {
  return h('p', { class: 'empty' }, message);
}

export function pageHeader(title: string, ...extra: Child[]): HTMLElement {
  return h('div', { class: 'page-header' }, h('h1', {}, title), ...extra);
}

export function duration(secs: number): string {
  const d = Math.floor(secs / 86400);
  const hh = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function since(ms: number): string {
  return new Date(ms).toLocaleString();
}

/** The role the signed-in user has, for hiding controls they may not use. */
export const session = { role: 'viewer' as 'admin' | 'viewer', name: null as string | null, via: 'open' };

export function canChange(): boolean {
  return session.role === 'admin';
}

/** Replaces the contents of `el`. */
export function fill(el: HTMLElement, ...children: (Child | Child[])[]) {
  el.replaceChildren();
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** What a page returns: a function that stops its timers and connections. */
export type Cleanup = (() => void) | void;
