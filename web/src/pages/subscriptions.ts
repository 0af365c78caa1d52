// Every subscription of every session, searchable by client id and filter, and the question
// operators ask most: who gets a message published on this topic?

import { api, type Page, type SubscriptionListing } from '../api';
import { h, fill, errorBox, emptyState, pageHeader } from '../ui';

const PER_PAGE = 50;

export function subscriptionsPage(root: HTMLElement) {
  let page = 1;
  const client = h('input', { id: 'sub-client', type: 'search', placeholder: 'part of a client id', autocomplete: 'off' });
  const filter = h('input', { id: 'sub-filter', type: 'search', placeholder: 'part of a filter', autocomplete: 'off' });
  const topic = h('input', { id: 'sub-topic', type: 'search', placeholder: 'e.g. home/kitchen/temp', autocomplete: 'off' });
  const list = h('div', {});
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const refresh = h('button', { type: 'button', class: 'secondary' }, 'Refresh');
  fill(
    root,
    pageHeader('Subscriptions', refresh),
    h(
      'form',
      { class: 'filters', role: 'search' },
      h('div', {}, h('label', { for: 'sub-client' }, 'Client id'), client),
      h('div', {}, h('label', { for: 'sub-filter' }, 'Filter'), filter),
      h('div', {}, h('label', { for: 'sub-topic' }, 'Matching topic'), topic),
    ),
    list,
    pager,
  );

  const load = async () => {
    const q = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
    if (client.value.trim()) q.set('client_id', client.value.trim());
    if (filter.value.trim()) q.set('q', filter.value.trim());
    if (topic.value.trim()) q.set('topic', topic.value.trim());
    let data: Page<SubscriptionListing>;
    try {
      data = await api<Page<SubscriptionListing>>(`/api/v1/subscriptions?${q}`);
    } catch (e) {
      fill(list, errorBox(`Cannot load subscriptions: ${(e as Error).message}`));
      fill(pager);
      return;
    }
    if (data.items.length === 0) {
      const searching = client.value.trim() || filter.value.trim() || topic.value.trim();
      fill(list, emptyState(searching ? 'No subscription matches.' : 'No subscriptions yet.'));
    } else {
      const rows = data.items.map((s) =>
        h(
          'tr',
          {},
          h('td', { 'data-label': 'Filter' }, h('code', {}, s.filter)),
          h('td', { 'data-label': 'Share group' }, s.share_group ?? '—'),
          h('td', { 'data-label': 'Client id' }, h('a', { href: `#/clients/${encodeURIComponent(s.client_id)}` }, s.client_id)),
          h('td', { 'data-label': 'QoS' }, String(s.qos)),
          h(
            'td',
            { 'data-label': 'Options' },
            [s.no_local ? 'no local' : '', s.retain_as_published ? 'retain as published' : '', s.identifier != null ? `id ${s.identifier}` : '']
              .filter(Boolean)
              .join(', ') || '—',
          ),
        ),
      );
      fill(
        list,
        h(
          'table',
          { class: 'table' },
          h('caption', { class: 'sr-only' }, 'Subscriptions'),
          h('thead', {}, h('tr', {}, ['Filter', 'Share group', 'Client id', 'QoS', 'Options'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rows),
        ),
      );
    }
    const pages = Math.max(1, Math.ceil(data.total / PER_PAGE));
    fill(
      pager,
      h('button', { type: 'button', class: 'secondary', disabled: page <= 1, onclick: () => { page--; void load(); } }, '‹ Previous'),
      h('span', {}, `Page ${page} of ${pages} · ${data.total} subscription${data.total === 1 ? '' : 's'}`),
      h('button', { type: 'button', class: 'secondary', disabled: page >= pages, onclick: () => { page++; void load(); } }, 'Next ›'),
    );
  };
  let debounce = 0;
  for (const input of [client, filter, topic]) {
    input.addEventListener('input', () => {
      window.clearTimeout(debounce);
      debounce = window.setTimeout(() => { page = 1; void load(); }, 250);
    });
  }
  refresh.addEventListener('click', () => void load());
  void load();
  return () => window.clearTimeout(debounce);
}
