// Devices: a searchable, paged list with product and online filters; registering a device
// (its secret is shown once, here); enabling, disabling and deleting.

import { api, devicePath, type Device, type Page, type Product } from '../api';
import { h, fill, errorBox, emptyState, pageHeader, canChange } from '../ui';

const PER_PAGE = 20;

export function onlineBadge(d: { online: boolean; enabled: boolean }) {
  if (!d.enabled) return h('span', { class: 'badge off' }, 'disabled');
  return h('span', { class: d.online ? 'badge on' : 'badge off' }, d.online ? 'online' : 'offline');
}

export function devicesPage(root: HTMLElement) {
  let page = 1;
  const initial = new URLSearchParams(location.hash.split('?')[1] ?? '');
  const search = h('input', { id: 'device-search', type: 'search', placeholder: 'part of a device name', autocomplete: 'off' });
  const productSel = h('select', { id: 'device-product' }, h('option', { value: '' }, 'all'));
  const onlineSel = h(
    'select',
    { id: 'device-online' },
    h('option', { value: '' }, 'all'),
    h('option', { value: 'true' }, 'online'),
    h('option', { value: 'false' }, 'offline'),
  );
  const status = h('div', {});
  const list = h('div', {});
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const refresh = h('button', { type: 'button', class: 'secondary' }, 'Refresh');
  const regProduct = h('select', { id: 'new-device-product', required: true });
  const regName = h('input', { id: 'new-device-name', required: true, autocomplete: 'off', spellcheck: 'false', pattern: '[A-Za-z0-9_\\-.@:]+' });
  const regResult = h('div', { 'aria-live': 'polite' });
  const register = h(
    'form',
    { class: 'card form spaced', 'aria-labelledby': 'new-device' },
    h('h2', { id: 'new-device' }, 'Register a device'),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, h('label', { for: 'new-device-product' }, 'Product'), regProduct),
      h('div', { class: 'grow' }, h('label', { for: 'new-device-name' }, 'Device name'), regName),
      h('button', { type: 'submit' }, 'Register')),
    regResult,
  );
  fill(
    root,
    pageHeader('Devices', refresh),
    h(
      'form',
      { class: 'filters', role: 'search', onsubmit: (e: Event) => e.preventDefault() },
      h('div', {}, h('label', { for: 'device-search' }, 'Search'), search),
      h('div', {}, h('label', { for: 'device-product' }, 'Product'), productSel),
      h('div', {}, h('label', { for: 'device-online' }, 'State'), onlineSel),
    ),
    status,
    list,
    pager,
    canChange() ? register : null,
  );

  const setEnabled = async (d: Device, enabled: boolean) => {
    try {
      await api(devicePath(d.productKey, d.deviceName), { method: 'PATCH', body: { enabled } });
      fill(status, h('p', { class: 'ok', role: 'status' }, `Device “${d.deviceName}” was ${enabled ? 'enabled' : 'disabled'}.`));
      void load();
    } catch (e) {
      fill(status, errorBox(`Cannot change “${d.deviceName}”: ${(e as Error).message}`));
    }
  };
  const remove = async (d: Device) => {
    if (!confirm(`Delete device “${d.deviceName}” of “${d.productKey}”? It is disconnected and its secret stops working.`)) return;
    try {
      await api(devicePath(d.productKey, d.deviceName), { method: 'DELETE' });
      fill(status, h('p', { class: 'ok', role: 'status' }, `Device “${d.deviceName}” was deleted.`));
      void load();
    } catch (e) {
      fill(status, errorBox(`Cannot delete “${d.deviceName}”: ${(e as Error).message}`));
    }
  };

  const load = async () => {
    const q = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
    if (search.value.trim()) q.set('q', search.value.trim());
    if (productSel.value) q.set('product', productSel.value);
    if (onlineSel.value) q.set('online', onlineSel.value);
    let data: Page<Device>;
    try {
      data = await api<Page<Device>>(`/api/v1/devices?${q}`);
    } catch (e) {
      fill(list, errorBox(`Cannot load devices: ${(e as Error).message}`));
      return;
    }
    if (data.items.length === 0) {
      fill(list, emptyState(search.value || productSel.value || onlineSel.value ? 'No device matches.' : 'No devices yet. Register one below, or run `thingmq simulate`.'));
    } else {
      fill(
        list,
        h(
          'table',
          { class: 'table' },
          h('caption', { class: 'sr-only' }, 'Devices'),
          h('thead', {}, h('tr', {}, ['Device', 'Product', 'State', 'Last address', ''].map((t) => h('th', { scope: 'col' }, t)))),
          h(
            'tbody',
            {},
            data.items.map((d) =>
              h(
                'tr',
                {},
                h('td', { 'data-label': 'Device' }, h('a', { href: `#/devices/${encodeURIComponent(d.productKey)}/${encodeURIComponent(d.deviceName)}` }, d.deviceName)),
                h('td', { 'data-label': 'Product' }, h('a', { href: `#/products/${encodeURIComponent(d.productKey)}` }, d.productKey)),
                h('td', { 'data-label': 'State' }, onlineBadge(d)),
                h('td', { 'data-label': 'Last address' }, d.lastIp ?? '—'),
                h(
                  'td',
                  { 'data-label': 'Actions' },
                  canChange()
                    ? h('div', { class: 'actions' },
                        h('button', { type: 'button', class: 'secondary', 'aria-label': `${d.enabled ? 'Disable' : 'Enable'} ${d.deviceName}`, onclick: () => void setEnabled(d, !d.enabled) }, d.enabled ? 'Disable' : 'Enable'),
                        h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${d.deviceName}`, onclick: () => void remove(d) }, 'Delete'))
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
      h('span', {}, `Page ${page} of ${pages} · ${data.total} devices`),
      h('button', { type: 'button', class: 'secondary', disabled: page >= pages, onclick: () => { page++; void load(); } }, 'Next ›'),
    );
  };

  const loadProducts = async () => {
    try {
      const products = await api<Product[]>('/api/v1/products');
      const opts = () => products.map((p) => h('option', { value: p.productKey, selected: p.productKey === initial.get('product') }, p.productKey));
      fill(productSel, h('option', { value: '' }, 'all'), opts());
      fill(regProduct, opts());
      if (products.length === 0) fill(regResult, emptyState('Create a product first (Products page).'));
    } catch (e) {
      fill(status, errorBox(`Cannot load products: ${(e as Error).message}`));
    }
  };

  register.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const pk = regProduct.value;
    const dn = regName.value.trim();
    try {
      const r = await api<{ productKey: string; deviceName: string; deviceSecret: string }>(`/api/v1/products/${encodeURIComponent(pk)}/devices`, {
        method: 'POST',
        body: { deviceName: dn },
      });
      fill(
        regResult,
        h('div', { class: 'secret', role: 'status' },
          h('p', { class: 'ok' }, `Device “${r.deviceName}” was registered. Copy its secret now: it is not shown again here.`),
          h('dl', { class: 'facts' },
            h('dt', {}, 'MQTT user name'), h('dd', {}, h('code', {}, `${r.deviceName}&${r.productKey}`)),
            h('dt', { id: 'secret-label' }, 'Device secret'), h('dd', {}, h('code', { 'aria-labelledby': 'secret-label', class: 'device-secret' }, r.deviceSecret)))),
      );
      regName.value = '';
      void load();
    } catch (e) {
      fill(regResult, errorBox(`Cannot register the device: ${(e as Error).message}`));
    }
  });

  let debounce = 0;
  search.addEventListener('input', () => {
    window.clearTimeout(debounce);
    debounce = window.setTimeout(() => { page = 1; void load(); }, 250);
  });
  productSel.addEventListener('change', () => { page = 1; void load(); });
  onlineSel.addEventListener('change', () => { page = 1; void load(); });
  refresh.addEventListener('click', () => void load());
  void loadProducts().then(load);
  const timer = window.setInterval(() => {
    if (!list.contains(document.activeElement) && !pager.contains(document.activeElement)) void load();
  }, 5000);
  return () => {
    window.clearInterval(timer);
    window.clearTimeout(debounce);
  };
}
