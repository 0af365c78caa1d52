import { api, type Me } from '../api';
import { h, errorBox, session } from '../ui';

export function loginPage(root: HTMLElement, done: () => void) {
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const status = h('div', {});
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in to thingmq'),
    h('label', { for: 'username' }, 'User name'),
    user,
    h('label', { for: 'password' }, 'Password'),
    pass,
    status,
    button,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    button.disabled = true;
    try {
      const me = await api<Me>('/api/v1/login', { method: 'POST', body: { username: user.value, password: pass.value } });
      session.role = me.role;
      session.name = me.name;
      session.via = me.via;
      done();
    } catch (e) {
      status.append(errorBox((e as Error).message));
      pass.select();
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  user.focus();
}
