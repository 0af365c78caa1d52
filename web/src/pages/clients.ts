// The client list (searchable, paged, filter by state, kick) and one client's detail.

import { api, type ClientDetail, type ClientSummary, type Page } from '../api';
import { h, fill, errorBox, emptyState, pageHeader, since, canChange } from '../ui';

const PER_PAGE = 20;

function stateBadge(connected: boolean) {
  return h('span', { class: connected ? 'badge on' : 'badge off' }, connected ? 'online' : 'offline');
}

async function kick(id: string, status: HTMLElement, after: () => void) {
  if (!confirm(`Disconnect client “${id}”?`)) return;
  try {
    await api(`/api/v1/clients/${encodeURIComponent(id)}`, { method: 'DELETE' });
    fill(status, h('p', { class: 'ok', role: 'status' }, `Client “${id}” was disconnected.`));
    after();
  } catch (e) {
    fill(status, errorBox(`Cannot disconnect “${id}”: ${(e as Error).message}`));
  }
}

export function clientsPage(root: HTMLElement) {
  let page = 1;
  const search = h('input', { id: 'client-search', type: 'search', placeholder: 'part of a client id', autocomplete: 'off' });
  const stateSel = h(
    'select',
    { id: 'client-state' },
    h('option', { value: '' }, 'all'),
    h('option', { value: 'true' }, 'online'),
    h('option', { value: 'false' }, 'offline'),
  );
  const status = h('div', {});
  const list = h('div', {});
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const refresh = h('button', { type: 'button', class: 'secondary' }, 'Refresh');
  fill(
    root,
    pageHeader('Clients', refresh),
    h(
      'form',
      { class: 'filters', role: 'search' },
      h('div', {}, h('label', { for: 'client-search' }, 'Search'), search),
      h('div', {}, h('label', { for: 'client-state' }, 'State'), stateSel),
    ),
    status,
    list,
    pager,
  );

  const load = async () => {
    const q = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
    if (search.value.trim()) q.set('q', search.value.trim());
    if (stateSel.value) q.set('connected', stateSel.value);
    let data: Page<ClientSummary>;
    try {
      data = await api<Page<ClientSummary>>(`/api/v1/clients?${q}`);
    } catch (e) {
      fill(list, errorBox(`Cannot load clients: ${(e as Error).message}`));
      return;
    }
    if (data.items.length === 0) {
      fill(list, emptyState(search.value || stateSel.value ? 'No client matches.' : 'No clients yet. Connect one with an MQTT client.'));
    } else {
      const rows = data.items.map((c) =>
        h(
          'tr',
          {},
          h('td', { 'data-label': 'Client id' }, h('a', { href: `#/clients/${encodeURIComponent(c.client_id)}` }, c.client_id)),
          h('td', { 'data-label': 'State' }, stateBadge(c.connected)),
          h('td', { 'data-label': 'User' }, c.connection?.username ?? '—'),
          h('td', { 'data-label': 'Address' }, c.connection ? (c.connection.internal ? 'internal' : c.connection.peer) : '—'),
          h('td', { 'data-label': 'Protocol' }, c.connection?.protocol ?? '—'),
          h('td', { 'data-label': 'Queued' }, String(c.queued)),
          h('td', { 'data-label': 'In flight' }, String(c.inflight)),
          h(
            'td',
            { 'data-label': 'Actions' },
            c.connected && canChange()
              ? h('button', { type: 'button', class: 'danger', 'aria-label': `Kick ${c.client_id}`, onclick: () => void kick(c.client_id, status, load) }, 'Kick')
              : '',
          ),
        ),
      );
      fill(
        list,
        h(
          'table',
          { class: 'table' },
          h('caption', { class: 'sr-only' }, 'Clients'),
          h('thead', {}, h('tr', {}, ['Client id', 'State', 'User', 'Address', 'Protocol', 'Queued', 'In flight', ''].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rows),
        ),
      );
    }
    const pages = Math.max(1, Math.ceil(data.total / PER_PAGE));
    fill(
      pager,
      h('button', { type: 'button', class: 'secondary', disabled: page <= 1, onclick: () => { page--; void load(); } }, '‹ Previous'),
      h('span', {}, `Page ${page} of ${pages} · ${data.total} clients`),
      h('button', { type: 'button', class: 'secondary', disabled: page >= pages, onclick: () => { page++; void load(); } }, 'Next ›'),
    );
  };
  let debounce = 0;
  search.addEventListener('input', () => {
    window.clearTimeout(debounce);
    debounce = window.setTimeout(() => { page = 1; void load(); }, 250);
  });
  stateSel.addEventListener('change', () => { page = 1; void load(); });
  refresh.addEventListener('click', () => void load());
  void load();
  // Refresh online states, but not under a keyboard user's focus (the table is rebuilt).
  const timer = window.setInterval(() => {
    if (!list.contains(document.activeElement) && !pager.contains(document.activeElement)) void load();
  }, 5000);
  return () => {
    window.clearInterval(timer);
    window.clearTimeout(debounce);
  };
}

export async function clientPage(root: HTMLElement, id: string) {
  const status = h('div', {});
  const body = h('div', {});
  fill(root, h('p', {}, h('a', { href: '#/clients' }, '‹ All clients')), pageHeader(`Client ${id}`), status, body);
  const load = async () => {
    let c: ClientDetail;
    try {
      c = await api<ClientDetail>(`/api/v1/clients/${encodeURIComponent(id)}`);
    } catch (e) {
      fill(body, errorBox((e as Error).message));
      return;
    }
    const conn = c.connection;
    fill(
      body,
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Session'),
        h(
          'dl',
          { class: 'facts' },
          h('dt', {}, 'State'), h('dd', {}, stateBadge(c.connected)),
          h('dt', {}, 'User'), h('dd', {}, conn?.username ?? '—'),
          h('dt', {}, 'Address'), h('dd', {}, conn ? (conn.internal ? 'internal link' : conn.peer) : '—'),
          h('dt', {}, 'Protocol'), h('dd', {}, conn?.protocol ?? '—'),
          h('dt', {}, 'Keep-alive'), h('dd', {}, conn ? `${conn.keep_alive} s` : '—'),
          h('dt', {}, 'Connected at'), h('dd', {}, conn ? since(conn.connected_at_ms) : '—'),
          h('dt', {}, 'Queued'), h('dd', {}, String(c.queued)),
          h('dt', {}, 'In flight'), h('dd', {}, String(c.inflight)),
        ),
        c.connected && canChange()
          ? h('button', { type: 'button', class: 'danger', onclick: () => void kick(id, status, load) }, 'Kick')
          : '',
      ),
      h(
        'section',
        { class: 'card' },
        h('h2', {}, `Subscriptions (${c.subscriptions.length})`),
        c.subscriptions.length === 0
          ? emptyState('No subscriptions.')
          : h(
              'table',
              { class: 'table' },
              h('thead', {}, h('tr', {}, ['Filter', 'QoS', 'Share group', 'Options'].map((t) => h('th', { scope: 'col' }, t)))),
              h(
                'tbody',
                {},
                c.subscriptions.map((s) =>
                  h(
                    'tr',
                    {},
                    h('td', { 'data-label': 'Filter' }, h('code', {}, s.filter)),
                    h('td', { 'data-label': 'QoS' }, String(s.qos)),
                    h('td', { 'data-label': 'Share group' }, s.share_group ?? '—'),
                    h('td', { 'data-label': 'Options' }, [s.no_local && 'no local', s.retain_as_published && 'retain as published', s.identifier !== null && `id ${s.identifier}`].filter(Boolean).join(', ') || '—'),
                  ),
                ),
              ),
            ),
      ),
    );
  };
  await load();
}
