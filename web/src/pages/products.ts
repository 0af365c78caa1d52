// Products: the list, creating one from a pasted or uploaded thing model (TSL JSON), and one
// product's thing model to read, download or edit (PUT). The API validates the model; its
// messages name the JSON path of the problem, so they are shown as they come.

import { api, type Product, type ProductDetail } from '../api';
import { h, fill, errorBox, emptyState, pageHeader, since, canChange } from '../ui';

function modelSummary(p: Product): string {
  const n = (k: number, one: string, many: string) => `${k} ${k === 1 ? one : many}`;
  return `${n(p.properties, 'property', 'properties')}, ${n(p.events, 'event', 'events')}, ${n(p.services, 'service', 'services')}`;
}

export function productsPage(root: HTMLElement) {
  const status = h('div', {});
  const list = h('div', {});
  fill(root, pageHeader('Products'), status, list, canChange() ? createForm(status, () => void load()) : null);

  const load = async () => {
    let items: Product[];
    try {
      items = await api<Product[]>('/api/v1/products');
    } catch (e) {
      fill(list, errorBox(`Cannot load products: ${(e as Error).message}`));
      return;
    }
    if (items.length === 0) {
      fill(list, emptyState('No products yet. Create one from a thing model (examples/things/*.json) below.'));
      return;
    }
    fill(
      list,
      h(
        'table',
        { class: 'table' },
        h('caption', { class: 'sr-only' }, 'Products'),
        h('thead', {}, h('tr', {}, ['Product key', 'Name', 'Node type', 'Validation', 'Model', 'Devices'].map((t) => h('th', { scope: 'col' }, t)))),
        h(
          'tbody',
          {},
          items.map((p) =>
            h(
              'tr',
              {},
              h('td', { 'data-label': 'Product key' }, h('a', { href: `#/products/${encodeURIComponent(p.productKey)}` }, p.productKey)),
              h('td', { 'data-label': 'Name' }, p.name),
              h('td', { 'data-label': 'Node type' }, p.nodeType),
              h('td', { 'data-label': 'Validation' }, p.validation),
              h('td', { 'data-label': 'Model' }, modelSummary(p)),
              h('td', { 'data-label': 'Devices' }, h('a', { href: `#/devices?product=${encodeURIComponent(p.productKey)}` }, 'Devices')),
            ),
          ),
        ),
      ),
    );
  };
  void load();
}

function createForm(status: HTMLElement, after: () => void): HTMLElement {
  const key = h('input', { id: 'product-key', spellcheck: 'false', autocomplete: 'off', placeholder: 'taken from the model’s profile.productKey when empty' });
  const name = h('input', { id: 'product-name', autocomplete: 'off', placeholder: 'defaults to the product key' });
  const validation = h(
    'select',
    { id: 'product-validation' },
    h('option', { value: 'strict' }, 'strict'),
    h('option', { value: 'weak' }, 'weak'),
    h('option', { value: 'none' }, 'none'),
  );
  const nodeType = h(
    'select',
    { id: 'product-node-type' },
    h('option', { value: 'direct' }, 'direct'),
    h('option', { value: 'gateway' }, 'gateway'),
    h('option', { value: 'sub-device' }, 'sub-device'),
  );
  const dynamic = h('input', { id: 'product-dynamic', type: 'checkbox' });
  const file = h('input', { id: 'product-file', type: 'file', accept: 'application/json,.json' });
  const tsl = h('textarea', { id: 'product-tsl', rows: 12, required: true, spellcheck: 'false', placeholder: '{"properties": [...], "events": [...], "services": [...]}' });
  const result = h('div', { 'aria-live': 'polite' });
  file.addEventListener('change', async () => {
    const f = file.files?.[0];
    if (f) tsl.value = await f.text();
  });
  const form = h(
    'form',
    { class: 'card form spaced', 'aria-labelledby': 'new-product' },
    h('h2', { id: 'new-product' }, 'New product'),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, h('label', { for: 'product-key' }, 'Product key'), key),
      h('div', { class: 'grow' }, h('label', { for: 'product-name' }, 'Name'), name),
      h('div', {}, h('label', { for: 'product-validation' }, 'Validation'), validation),
      h('div', {}, h('label', { for: 'product-node-type' }, 'Node type'), nodeType)),
    h('div', { class: 'check' }, dynamic, h('label', { for: 'product-dynamic' }, 'Gateways may register devices of this product (thing/sub/register)')),
    h('label', { for: 'product-file' }, 'Thing model file'),
    file,
    h('label', { for: 'product-tsl' }, 'Thing model (TSL JSON)'),
    tsl,
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Create product')),
    result,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let model: unknown;
    try {
      model = JSON.parse(tsl.value);
    } catch (e) {
      fill(result, errorBox(`The thing model is not JSON: ${(e as Error).message}`));
      return;
    }
    const fromProfile = (model as { profile?: { productKey?: unknown } })?.profile?.productKey;
    const productKey = key.value.trim() || (typeof fromProfile === 'string' ? fromProfile : '');
    if (!productKey) {
      fill(result, errorBox('productKey: required (type one, or put it in the model’s profile.productKey).'));
      key.focus();
      return;
    }
    try {
      const p = await api<Product>('/api/v1/products', {
        method: 'POST',
        body: { productKey, name: name.value.trim() || undefined, validation: validation.value, nodeType: nodeType.value, dynamicRegister: dynamic.checked, tsl: model },
      });
      fill(result);
      fill(status, h('p', { class: 'ok', role: 'status' }, `Product “${p.productKey}” was created.`));
      form.reset();
      after();
    } catch (e) {
      fill(result, errorBox(`Cannot create the product: ${(e as Error).message}`));
    }
  });
  return form;
}

export async function productPage(root: HTMLElement, key: string, notice?: string): Promise<() => void> {
  const status = h('div', {}, notice ? h('p', { class: 'ok', role: 'status' }, notice) : null);
  const body = h('div', {});
  fill(root, h('p', {}, h('a', { href: '#/products' }, '‹ All products')), pageHeader(`Product ${key}`), status, body);
  let p: ProductDetail;
  try {
    p = await api<ProductDetail>(`/api/v1/products/${encodeURIComponent(key)}`);
  } catch (e) {
    fill(body, errorBox((e as Error).message));
    return () => {};
  }
  const text = JSON.stringify(p.tsl, null, 2);
  const download = h('a', { class: 'button secondary', download: `${p.productKey}.json`, href: URL.createObjectURL(new Blob([text], { type: 'application/json' })) }, 'Export the thing model');
  const del = async () => {
    if (!confirm(`Delete product “${p.productKey}”? Only a product without devices can be deleted.`)) return;
    try {
      await api(`/api/v1/products/${encodeURIComponent(p.productKey)}`, { method: 'DELETE' });
      location.hash = '#/products';
    } catch (e) {
      fill(status, errorBox(`Cannot delete: ${(e as Error).message}`));
    }
  };
  fill(
    body,
    h(
      'section',
      { class: 'card' },
      h('dl', { class: 'facts' },
        h('dt', {}, 'Name'), h('dd', {}, p.name),
        h('dt', {}, 'Node type'), h('dd', {}, p.nodeType),
        h('dt', {}, 'Validation'), h('dd', {}, p.validation),
        h('dt', {}, 'Dynamic registration'), h('dd', {}, p.dynamicRegister ? 'gateways may register devices' : 'off'),
        h('dt', {}, 'Created'), h('dd', {}, since(p.createdMs)),
        h('dt', {}, 'Model'), h('dd', {}, modelSummary(p))),
      h('div', { class: 'actions' },
        h('a', { href: `#/devices?product=${encodeURIComponent(p.productKey)}` }, 'Devices of this product'),
        download,
        canChange() ? h('button', { type: 'button', class: 'danger', onclick: () => void del() }, 'Delete product') : null),
    ),
    h('section', { class: 'card' }, h('h2', { id: 'tsl-head' }, 'Thing model'), h('pre', { class: 'payload', 'aria-labelledby': 'tsl-head', tabindex: 0 }, text)),
    canChange() ? editForm(p, text, (msg) => void productPage(root, key, msg).then((c) => (cleanupNext = c))) : null,
  );
  let cleanupNext: (() => void) | null = null;
  return () => {
    URL.revokeObjectURL(download.href);
    cleanupNext?.();
  };
}

/** Edits a product's name, validation mode and thing model; saving replaces them (PUT). */
function editForm(p: ProductDetail, text: string, saved: (msg: string) => void): HTMLElement {
  const name = h('input', { id: 'edit-name', autocomplete: 'off', value: p.name });
  const validation = h('select', { id: 'edit-validation' },
    ['strict', 'weak', 'none'].map((v) => h('option', { value: v, selected: v === p.validation }, v)));
  const dynamic = h('input', { id: 'edit-dynamic', type: 'checkbox', checked: p.dynamicRegister });
  const tsl = h('textarea', { id: 'edit-tsl', rows: 16, required: true, spellcheck: 'false', 'aria-describedby': 'edit-help' });
  tsl.value = text;
  const result = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'card form', 'aria-labelledby': 'edit-head' },
    h('h2', { id: 'edit-head' }, 'Edit the thing model'),
    h('p', { class: 'muted', id: 'edit-help' }, 'Saving replaces the model for every device of the product; reports are checked against the new one at once.'),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, h('label', { for: 'edit-name' }, 'Product name'), name),
      h('div', {}, h('label', { for: 'edit-validation' }, 'Validation mode'), validation)),
    h('div', { class: 'check' }, dynamic, h('label', { for: 'edit-dynamic' }, 'Gateways may register devices of this product (thing/sub/register)')),
    h('label', { for: 'edit-tsl' }, 'Thing model to save (TSL JSON)'),
    tsl,
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save the thing model')),
    result);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let model: unknown;
    try {
      model = JSON.parse(tsl.value);
    } catch (e) {
      fill(result, errorBox(`The thing model is not JSON: ${(e as Error).message}`));
      tsl.focus();
      return;
    }
    try {
      await api<Product>(`/api/v1/products/${encodeURIComponent(p.productKey)}`, {
        method: 'PUT',
        body: { productKey: p.productKey, name: name.value.trim() || undefined, validation: validation.value, nodeType: p.nodeType, dynamicRegister: dynamic.checked, tsl: model },
      });
      saved(`The thing model of “${p.productKey}” was saved.`);
    } catch (e) {
      fill(result, errorBox(`Cannot save the thing model: ${(e as Error).message}`));
      tsl.focus();
    }
  });
  return form;
}
