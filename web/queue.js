// The queue: the messages waiting, filtered by state and recipient domain,
// with the actions of `tern queue` (retry, hold, release, delete), each
// after a confirmation. The list follows the live stream: when the queue
// changes (a delivery, a retry's outcome) it is read again.

import { api, badge, confirmAction, fmtBytes, fmtReply, h, heading, notice, seg, subscribeLive, table, time } from './lib.js';

const STATES = ['queued', 'deferred', 'active', 'held'];
const LIMIT = 200;

/** The filter, kept while the dashboard is open. */
const filter = { state: '', domain: '' };

/**
 * What each action does, for the dialog and the notice after it.
 * @type {Record<string, {label: string, ask: (id: string) => string, done: string}>}
 */
export const ACTIONS = {
  retry: { label: 'Retry now', ask: (id) => `Try to deliver ${id} now, before its next scheduled attempt?`, done: 'will be tried now' },
  hold: { label: 'Hold', ask: (id) => `Hold ${id}? It will not be tried until it is released.`, done: 'is on hold' },
  release: { label: 'Release', ask: (id) => `Release ${id}? It goes back to the schedule and is tried now.`, done: 'is released' },
  delete: { label: 'Delete', ask: (id) => `Delete ${id} from the queue? It will not be delivered and no bounce is sent. This cannot be undone.`, done: 'is deleted' },
};

/**
 * Asks, then runs a queue action; true when it ran.
 * @param {string} action
 * @param {string} id
 * @param {ReturnType<typeof notice>} msg
 */
export async function queueAction(action, id, msg) {
  const a = ACTIONS[action];
  if (!a) return false;
  if (!(await confirmAction(`${a.label}?`, a.ask(id), a.label))) return false;
  try {
    await api('POST', `/ui/api/queue/${seg(id)}/${action}`);
    msg.ok(`${id} ${a.done}.`);
    return true;
  } catch (e) {
    msg.error(e);
    return false;
  }
}

/**
 * The buttons for one queued message.
 * @param {{id: string, state: string}} m
 * @param {(action: string) => void} run
 */
export function actionButtons(m, run) {
  const names = ['retry', m.state === 'held' ? 'release' : 'hold', 'delete'];
  return h(
    'div',
    { class: 'row-actions' },
    names.map((n) =>
      h('button', { type: 'button', class: n === 'delete' ? 'danger small' : 'small', dataset: { action: n }, 'aria-label': `${ACTIONS[n]?.label} ${m.id}`, onclick: () => run(n) }, ACTIONS[n]?.label),
    ),
  );
}

/** @param {import('./app.js').PageContext} ctx */
export async function queuePage(ctx) {
  const { main } = ctx;
  const msg = notice();
  const state = /** @type {HTMLSelectElement} */ (
    h('select', { id: 'queue-state', name: 'state' }, h('option', { value: '' }, 'Any'), STATES.map((s) => h('option', { value: s }, s)))
  );
  state.value = filter.state;
  const domain = /** @type {HTMLInputElement} */ (
    h('input', { id: 'queue-domain', name: 'domain', type: 'text', inputmode: 'url', autocapitalize: 'none', spellcheck: 'false', placeholder: 'example.com', value: filter.domain })
  );
  const count = h('p', { class: 'muted', role: 'status' });
  const list = h('div');
  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter the queue' },
    h('div', { class: 'field' }, h('label', { for: 'queue-state' }, 'State'), state),
    h('div', { class: 'field' }, h('label', { for: 'queue-domain' }, 'Recipient domain'), domain),
    h('div', { class: 'field buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Filter'), h('button', { type: 'button', onclick: () => void load() }, 'Refresh')),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    filter.state = state.value;
    filter.domain = domain.value.trim();
    void load();
  });
  main.append(h('div', { class: 'page-head' }, heading('Queue')), form, msg.el, count, list);

  async function load() {
    // What had focus in the list, to give it back after the list is drawn again.
    const focused = /** @type {HTMLElement | null} */ (document.activeElement);
    const held = focused && list.contains(focused) ? { id: focused.closest('tr')?.dataset.id, action: focused.dataset.action } : null;
    const q = new URLSearchParams({ limit: String(LIMIT) });
    if (filter.state) q.set('state', filter.state);
    if (filter.domain) q.set('domain', filter.domain);
    try {
      const r = await api('GET', `/ui/api/queue?${q}`);
      if (!ctx.alive()) return;
      /** @type {any[]} */
      const messages = r.messages;
      count.textContent =
        r.total === 0 ? 'Nothing waiting.' : messages.length < r.total ? `${r.total} messages; the first ${messages.length} shown.` : `${r.total} message${r.total === 1 ? '' : 's'}.`;
      list.replaceChildren(
        messages.length === 0
          ? h('p', { class: 'empty' }, filter.state || filter.domain ? 'No message matches the filter.' : 'The queue is empty.')
          : table(
              'Queued messages',
              ['Message', 'From', 'Recipients', 'State', 'Attempts', 'Next attempt', 'Size', 'Actions'],
              messages.map((m) =>
                h(
                  'tr',
                  { dataset: { id: m.id, state: m.state } },
                  h('td', null, h('a', { href: `#/messages/${seg(m.id)}`, class: 'mono' }, m.id), h('div', { class: 'muted small' }, time(m.createdAt))),
                  h('td', { class: 'addr' }, m.from || '<>'),
                  h(
                    'td',
                    null,
                    h(
                      'ul',
                      { class: 'plain' },
                      m.recipients.map((/** @type {any} */ r) =>
                        h('li', null, h('span', { class: 'addr' }, r.address), ' ', badge(r.status), r.lastReply ? h('div', { class: 'muted small reply' }, fmtReply(r.lastReply)) : null),
                      ),
                    ),
                  ),
                  h('td', null, badge(m.state)),
                  h('td', { class: 'num' }, m.attempts),
                  h('td', null, m.state === 'held' ? '—' : time(m.nextAttempt)),
                  h('td', { class: 'num' }, fmtBytes(m.size)),
                  h(
                    'td',
                    { class: 'actions' },
                    actionButtons(m, async (action) => {
                      if (await queueAction(action, m.id, msg)) await load();
                    }),
                  ),
                ),
              ),
            ),
      );
      if (held?.id) {
        const row = [...list.querySelectorAll('tr')].find((tr) => tr.dataset.id === held.id);
        const again = /** @type {HTMLElement | null | undefined} */ (row?.querySelector(`button[data-action="${held.action}"]`) ?? row?.querySelector('button'));
        if (again) again.focus();
        else /** @type {HTMLElement | null} */ (main.querySelector('h1'))?.focus();
      }
    } catch (e) {
      if (ctx.alive()) msg.error(e);
    }
  }

  // Every live update after the first (which comes on connecting) means the queue moved.
  let seen = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      // Not under an open dialog: the row it was opened from must stay.
      if (document.querySelector('dialog[open]')) later();
      else void load();
    }, 300);
  };
  const stopLive = subscribeLive({
    update() {
      if (seen) later();
      seen = true;
    },
  });

  await load();
  return () => {
    stopLive();
    clearTimeout(timer);
  };
}
