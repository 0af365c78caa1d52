// The console shell: checks who is signed in, draws the navigation and routes by URL hash
// (`#/clients`), so the server only ever serves `/` and hashed assets. New sections add an entry
// to `routes` and `nav`.

import './style.css';
import { api, ApiError, setUnauthorizedHandler, type Me } from './api';
import { h, fill, session, errorBox, type Cleanup } from './ui';
import { loginPage } from './pages/login';
import { dashboardPage } from './pages/dashboard';
import { clientsPage, clientPage } from './pages/clients';
import { subscriptionsPage } from './pages/subscriptions';
import { retainedPage, retainedMessagePage } from './pages/retained';
import { publishPage } from './pages/publish';
import { productsPage, productPage } from './pages/products';
import { devicesPage } from './pages/devices';

type Page = (root: HTMLElement, param: string) => Cleanup | Promise<Cleanup>;

const routes: { pattern: RegExp; page: Page; title: string }[] = [
  { pattern: /^\/$/, page: dashboardPage, title: 'Dashboard' },
  { pattern: /^\/clients$/, page: clientsPage, title: 'Clients' },
  { pattern: /^\/clients\/(.+)$/, page: clientPage, title: 'Client' },
  { pattern: /^\/subscriptions$/, page: subscriptionsPage, title: 'Subscriptions' },
  { pattern: /^\/retained$/, page: retainedPage, title: 'Retained messages' },
  { pattern: /^\/retained\/(.+)$/, page: retainedMessagePage, title: 'Retained message' },
  { pattern: /^\/publish$/, page: publishPage, title: 'Publish' },
  { pattern: /^\/products$/, page: productsPage, title: 'Products' },
  { pattern: /^\/products\/(.+)$/, page: productPage, title: 'Product' },
  { pattern: /^\/devices$/, page: devicesPage, title: 'Devices' },
  // The device page subscribes over MQTT and draws charts: loaded with MQTT.js and uPlot.
  { pattern: /^\/devices\/([^/]+\/.+)$/, page: async (root, param) => (await import('./pages/device')).devicePage(root, param), title: 'Device' },
  // MQTT.js is most of the bundle: loaded only when the live tail is opened.
  { pattern: /^\/tail$/, page: async (root) => (await import('./pages/tail')).tailPage(root), title: 'Live tail' },
];

const nav: [string, string][] = [
  ['#/', 'Dashboard'],
  ['#/devices', 'Devices'],
  ['#/products', 'Products'],
  ['#/clients', 'Clients'],
  ['#/subscriptions', 'Subscriptions'],
  ['#/retained', 'Retained'],
  ['#/publish', 'Publish'],
  ['#/tail', 'Live tail'],
];

const app = document.getElementById('app')!;
let cleanup: Cleanup;
let signedIn = false;

function currentPath(): string {
  const hash = location.hash.replace(/^#/, '');
  return hash.split('?')[0] || '/';
}

async function logout() {
  try {
    await api('/api/v1/logout', { method: 'POST' });
  } catch {
    // Signed out locally either way.
  }
  signedIn = false;
  location.hash = '#/login';
}

function shell(main: HTMLElement): HTMLElement {
  const path = currentPath();
  const menuButton = h('button', { class: 'menu-toggle', 'aria-expanded': 'false', 'aria-controls': 'nav' }, 'Menu');
  const links = h(
    'ul',
    { id: 'nav' },
    nav.map(([href, label]) => {
      const target = href.slice(1);
      const active = target === '/' ? path === '/' : path.startsWith(target);
      return h('li', {}, h('a', { href, 'aria-current': active ? 'page' : undefined }, label));
    }),
  );
  menuButton.addEventListener('click', () => {
    const open = links.classList.toggle('open');
    menuButton.setAttribute('aria-expanded', String(open));
  });
  const who =
    session.via === 'session'
      ? h('span', { class: 'who' }, `${session.name} (${session.role}) `, h('button', { class: 'link', onclick: logout }, 'Sign out'))
      : h('span', { class: 'who' }, session.via === 'open' ? 'open access (loopback)' : session.role);
  return h(
    'div',
    { class: 'layout' },
    h('header', {}, h('a', { class: 'brand', href: '#/' }, 'thingmq'), menuButton, h('nav', { 'aria-label': 'Main' }, links), who),
    main,
  );
}

async function whoAmI(): Promise<boolean> {
  try {
    const me = await api<Me>('/api/v1/me');
    session.role = me.role;
    session.name = me.name;
    session.via = me.via;
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}

async function render() {
  if (typeof cleanup === 'function') cleanup();
  cleanup = undefined;
  const path = currentPath();
  if (path === '/login') {
    document.title = 'Sign in · thingmq';
    const main = h('main', { class: 'login' });
    fill(app, main);
    cleanup = loginPage(main, () => {
      signedIn = true;
      location.hash = '#/';
    });
    return;
  }
  if (!signedIn) {
    try {
      signedIn = await whoAmI();
    } catch (e) {
      fill(app, h('main', {}, errorBox((e as Error).message)));
      return;
    }
    if (!signedIn) {
      location.hash = '#/login';
      return;
    }
  }
  const route = routes.find((r) => r.pattern.test(path));
  const main = h('main', { id: 'main' });
  fill(app, shell(main));
  if (!route) {
    document.title = 'Not found · thingmq';
    fill(main, h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the dashboard')));
    return;
  }
  document.title = `${route.title} · thingmq`;
  const param = decodeURIComponent(path.match(route.pattern)?.[1] ?? '');
  cleanup = await route.page(main, param);
}

setUnauthorizedHandler(() => {
  signedIn = false;
  if (currentPath() !== '/login') location.hash = '#/login';
});
window.addEventListener('hashchange', () => void render());
void render();
