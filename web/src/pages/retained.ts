// Retained messages: list (filter, paged), view one, delete.

import { api, type Page, type RetainedInfo, type RetainedMessage } from '../api';
import { h, fill, errorBox, emptyState, pageHeader, canChange } from '../ui';

const PER_PAGE = 20;

function link(topic: string) {
  return `#/retained/${encodeURIComponent(topic)}`;
}

function apiPath(topic: string) {
  return `/api/v1/retained/${topic.split('/').map(encodeURIComponent).join('/')}`;
}

export function retainedPage(root: HTMLElement) {
  let page = 1;
  const filter = h('input', { id: 'retained-filter', placeholder: '#', autocomplete: 'off', spellcheck: 'false' });
  const status = h('div', {});
  const list = h('div', {});
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const form = h(
    'form',
    { class: 'filters', role: 'search' },
    h('div', {}, h('label', { for: 'retained-filter' }, 'Topic filter (+ and # allowed)'), filter),
    h('div', {}, h('button', { type: 'submit' }, 'Apply')),
  );
  fill(root, pageHeader('Retained messages'), form, status, list, pager);
  const load = async () => {
    const q = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
    if (filter.value.trim()) q.set('filter', filter.value.trim());
    let data: Page<RetainedInfo>;
    try {
      data = await api<Page<RetainedInfo>>(`/api/v1/retained?${q}`);
    } catch (e) {
      fill(list, errorBox(`Cannot load retained messages: ${(e as Error).message}`));
      fill(pager);
      return;
    }
    if (data.items.length === 0) {
      fill(list, emptyState(filter.value ? 'No retained message matches this filter.' : 'No retained messages.'));
    } else {
      fill(
        list,
        h(
          'table',
          { class: 'table' },
          h('thead', {}, h('tr', {}, ['Topic', 'QoS', 'Size', 'Content type', ''].map((t) => h('th', { scope: 'col' }, t)))),
          h(
            'tbody',
            {},
            data.items.map((m) =>
              h(
                'tr',
                {},
                h('td', { 'data-label': 'Topic' }, h('a', { href: link(m.topic) }, m.topic)),
                h('td', { 'data-label': 'QoS' }, String(m.qos)),
                h('td', { 'data-label': 'Size' }, `${m.size} B`),
                h('td', { 'data-label': 'Content type' }, m.content_type ?? '—'),
                h(
                  'td',
                  { 'data-label': 'Actions' },
                  canChange()
                    ? h('button', { type: 'button', class: 'danger', 'aria-label': `Delete retained message on ${m.topic}`, onclick: () => void remove(m.topic, status, load) }, 'Delete')
                    : '',
                ),
              ),
            ),
          ),
        ),
      );
    }
    const pages = Math.max(1, Math.ceil(data.total / PER_PAGE));
    fill(
      pager,
      h('button', { type: 'button', class: 'secondary', disabled: page <= 1, onclick: () => { page--; void load(); } }, '‹ Previous'),
      h('span', {}, `Page ${page} of ${pages} · ${data.total} messages`),
      h('button', { type: 'button', class: 'secondary', disabled: page >= pages, onclick: () => { page++; void load(); } }, 'Next ›'),
    );
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    page = 1;
    void load();
  });
  void load();
}

async function remove(topic: string, status: HTMLElement, after: () => void) {
  if (!confirm(`Delete the retained message on “${topic}”?`)) return;
  try {
    await api(apiPath(topic), { method: 'DELETE' });
    fill(status, h('p', { class: 'ok', role: 'status' }, `Deleted the retained message on “${topic}”.`));
    after();
  } catch (e) {
    fill(status, errorBox(`Cannot delete: ${(e as Error).message}`));
  }
}

export async function retainedMessagePage(root: HTMLElement, topic: string) {
  const status = h('div', {});
  const body = h('div', {});
  fill(root, h('p', {}, h('a', { href: '#/retained' }, '‹ All retained messages')), pageHeader('Retained message'), status, body);
  let m: RetainedMessage;
  try {
    m = await api<RetainedMessage>(apiPath(topic));
  } catch (e) {
    fill(body, errorBox((e as Error).message));
    return;
  }
  let pretty = m.payload;
  if (pretty !== null) {
    try {
      pretty = JSON.stringify(JSON.parse(pretty), null, 2);
    } catch {
      // Not JSON: shown as it is.
    }
  }
  fill(
    body,
    h(
      'section',
      { class: 'card' },
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'Topic'), h('dd', {}, h('code', {}, m.topic)),
        h('dt', {}, 'QoS'), h('dd', {}, String(m.qos)),
        h('dt', {}, 'Size'), h('dd', {}, `${m.size} bytes`),
        h('dt', {}, 'Content type'), h('dd', {}, m.content_type ?? '—'),
        h('dt', {}, 'Expires in'), h('dd', {}, m.expires_in_secs === null ? 'never' : `${m.expires_in_secs} s`),
      ),
      h('h2', {}, pretty === null ? 'Payload (binary, base64)' : 'Payload'),
      h('pre', { class: 'payload', tabindex: 0, 'aria-label': 'Payload' }, pretty ?? m.payload_base64),
      canChange()
        ? h('button', { type: 'button', class: 'danger', onclick: () => void remove(m.topic, status, () => { location.hash = '#/retained'; }) }, 'Delete')
        : '',
    ),
  );
}
