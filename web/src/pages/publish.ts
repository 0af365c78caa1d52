// A form that publishes a message as the broker (POST /api/v1/publish).

import { api } from '../api';
import { h, fill, errorBox, pageHeader, canChange } from '../ui';

export function publishPage(root: HTMLElement) {
  if (!canChange()) {
    fill(root, pageHeader('Publish'), errorBox('Your role (viewer) may not publish messages.'));
    return;
  }
  const topic = h('input', { id: 'pub-topic', name: 'topic', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'home/lamp/set' });
  const payload = h('textarea', { id: 'pub-payload', name: 'payload', rows: 5, spellcheck: 'false' });
  const qos = h('select', { id: 'pub-qos', name: 'qos' }, [0, 1, 2].map((q) => h('option', { value: q }, `QoS ${q}`)));
  const retain = h('input', { id: 'pub-retain', name: 'retain', type: 'checkbox' });
  const status = h('div', {});
  const button = h('button', { type: 'submit' }, 'Publish');
  const form = h(
    'form',
    { class: 'card form' },
    h('label', { for: 'pub-topic' }, 'Topic'),
    topic,
    h('label', { for: 'pub-payload' }, 'Payload (text)'),
    payload,
    h('div', { class: 'row' }, h('div', {}, h('label', { for: 'pub-qos' }, 'QoS'), qos), h('div', { class: 'check' }, retain, h('label', { for: 'pub-retain' }, 'Retain'))),
    status,
    button,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    button.disabled = true;
    try {
      const r = await api<{ subscribers: number }>('/api/v1/publish', {
        method: 'POST',
        body: { topic: topic.value, payload: payload.value, qos: Number(qos.value), retain: retain.checked },
      });
      fill(status, h('p', { class: 'ok', role: 'status' }, `Published to “${topic.value}”: ${r.subscribers} subscriber${r.subscribers === 1 ? '' : 's'}.`));
    } catch (e) {
      fill(status, errorBox((e as Error).message));
    } finally {
      button.disabled = false;
    }
  });
  fill(root, pageHeader('Publish'), form);
}
