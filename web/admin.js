// The lists an operator keeps: suppressions, API keys, webhooks, users.
// Each is a table with a remove button (after a confirmation) and, where
// the server side allows, a form to add one.

import { $, api, badge, confirmAction, field, h, heading, notice, restoreFocus, seg, session, splitList, table, time } from './lib.js';

const SUPPRESSIONS_PAGE = 100;

/**
 * A form with its fields in a row and one submit button.
 * @param {string} label
 * @param {HTMLElement[]} fields
 * @param {string} submit
 * @param {() => Promise<void>} onsubmit
 */
function addForm(label, fields, submit, onsubmit) {
  const button = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', class: 'primary' }, submit));
  const form = h('form', { class: 'card add-form', 'aria-label': label }, h('h2', null, label), h('div', { class: 'filters' }, fields, h('div', { class: 'field buttons' }, button)));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try {
      await onsubmit();
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/**
 * A remove button that asks first.
 * @param {string} label the button's text
 * @param {string} what read by screen readers after the label
 * @param {string} question
 * @param {() => Promise<void>} run
 */
function removeButton(label, what, question, run) {
  return h(
    'button',
    {
      type: 'button',
      class: 'danger small',
      'aria-label': `${label} ${what}`,
      onclick: async () => {
        if (await confirmAction(`${label}?`, question, label)) await run();
      },
    },
    label,
  );
}

/** @param {import('./app.js').PageContext} ctx */
export async function suppressionsPage(ctx) {
  const { main } = ctx;
  const msg = notice();
  const address = field('sup-address', 'Address', { type: 'text', inputmode: 'email', autocapitalize: 'none', spellcheck: 'false', required: true, autocomplete: 'off' });
  const reason = field('sup-reason', 'Reason', { type: 'text', required: true, maxlength: 256, autocomplete: 'off' });
  const list = h('div');
  const status = h('p', { class: 'muted', role: 'status' });
  let after = '';
  const more = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', hidden: true, onclick: () => void load(true) }, 'Next page'));
  /** @type {any[]} */
  let rows = [];

  main.append(
    h('div', { class: 'page-head' }, heading('Suppressions')),
    h('p', { class: 'muted' }, 'Mail to a suppressed address is not sent, from any source. Hard bounces and complaints add addresses here by themselves.'),
    addForm('Suppress an address', [address.el, reason.el], 'Add', async () => {
      const a = address.input.value.trim();
      try {
        await api('PUT', `/ui/api/suppressions/${seg(a)}`, { reason: reason.input.value.trim() });
        msg.ok(`${a} is suppressed.`);
        address.input.value = '';
        reason.input.value = '';
        await load(false);
        address.input.focus();
      } catch (e) {
        msg.error(e);
      }
    }),
    msg.el,
    status,
    list,
    h('p', null, more),
  );

  /** @param {boolean} next */
  async function load(next) {
    const q = new URLSearchParams({ limit: String(SUPPRESSIONS_PAGE) });
    if (next && after) q.set('after', after);
    try {
      const r = await api('GET', `/ui/api/suppressions?${q}`);
      if (!ctx.alive()) return;
      rows = next ? [...rows, ...r.suppressions] : r.suppressions;
      after = r.next ?? '';
      more.hidden = r.suppressions.length < SUPPRESSIONS_PAGE;
      status.textContent = rows.length === 0 ? 'No address is suppressed.' : `${rows.length}${more.hidden ? '' : '+'} suppressed address${rows.length === 1 ? '' : 'es'}.`;
      list.replaceChildren(
        rows.length === 0
          ? ''
          : table(
              'Suppressed addresses',
              ['Address', 'Reason', 'Added by', 'Details', 'Since', 'Actions'],
              rows.map((s) =>
                h(
                  'tr',
                  { dataset: { address: s.address } },
                  h('td', { class: 'addr' }, s.address),
                  h('td', null, s.reason),
                  h('td', null, s.source),
                  h('td', { class: 'small' }, s.detail ?? '—'),
                  h('td', null, time(s.createdAt)),
                  h(
                    'td',
                    { class: 'actions' },
                    removeButton('Remove', s.address, `Remove ${s.address} from the suppression list? Mail to it will be sent again.`, async () => {
                      try {
                        await api('DELETE', `/ui/api/suppressions/${seg(s.address)}`);
                        msg.ok(`${s.address} is no longer suppressed.`);
                        await load(false);
                        restoreFocus(null);
                      } catch (e) {
                        msg.error(e);
                      }
                    }),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      if (ctx.alive()) msg.error(e);
    }
  }

  await load(false);
}

/** @param {import('./app.js').PageContext} ctx */
export async function keysPage(ctx) {
  const { main } = ctx;
  const msg = notice();
  const name = field('key-name', 'Name', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', pattern: '[A-Za-z0-9._\\-]+', title: 'Letters, digits, dot, dash, underscore' });
  const sendAs = field('key-send-as', 'May send as', { type: 'text', autocapitalize: 'none', spellcheck: 'false', placeholder: 'app@example.com, @example.com', autocomplete: 'off' });
  const perHour = field('key-per-hour', 'Messages per hour', { type: 'number', min: 1, step: 1, inputmode: 'numeric' });
  const admin = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id: 'key-admin', name: 'admin' }));
  const list = h('div');

  main.append(
    h('div', { class: 'page-head' }, heading('API keys')),
    h('p', { class: 'muted' }, 'Keys for the HTTP API (/v1/). A key is shown once, when it is made; only its hash is stored.'),
    addForm(
      'Create a key',
      [name.el, sendAs.el, perHour.el, h('div', { class: 'field check' }, admin, h('label', { for: 'key-admin' }, 'Admin (reads every message)'))],
      'Create',
      async () => {
        /** @type {Record<string, unknown>} */
        const body = { name: name.input.value.trim(), sendAs: splitList(sendAs.input.value), admin: admin.checked };
        if (perHour.input.value) body.messagesPerHour = Number(perHour.input.value);
        try {
          const r = await api('POST', '/ui/api/keys', body);
          name.input.value = '';
          sendAs.input.value = '';
          perHour.input.value = '';
          admin.checked = false;
          msg.ok(`Key ${r.name} created.`);
          await load();
          showKey(r.key);
        } catch (e) {
          msg.error(e);
        }
      },
    ),
    msg.el,
    list,
  );

  async function load() {
    try {
      const r = await api('GET', '/ui/api/keys');
      if (!ctx.alive()) return;
      /** @type {any[]} */
      const keys = r.keys;
      list.replaceChildren(
        keys.length === 0
          ? h('p', { class: 'empty' }, 'No API keys yet.')
          : table(
              'API keys',
              ['Name', 'May send as', 'Admin', 'Per hour', 'Created', 'Actions'],
              keys.map((k) =>
                h(
                  'tr',
                  { dataset: { name: k.name } },
                  h('td', { class: 'mono' }, k.name),
                  h('td', { class: 'addr' }, k.sendAs?.length ? k.sendAs.join(', ') : '—'),
                  h('td', null, k.admin ? 'yes' : 'no'),
                  h('td', { class: 'num' }, k.messagesPerHour ?? 'default'),
                  h('td', null, time(k.createdAt)),
                  h(
                    'td',
                    { class: 'actions' },
                    removeButton('Revoke', k.name, `Revoke the key ${k.name}? Clients using it are refused from now on, and its webhooks stop.`, async () => {
                      try {
                        await api('DELETE', `/ui/api/keys/${seg(k.name)}`);
                        msg.ok(`Key ${k.name} revoked.`);
                        await load();
                        restoreFocus(null);
                      } catch (e) {
                        msg.error(e);
                      }
                    }),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      if (ctx.alive()) msg.error(e);
    }
  }

  await load();
}

/**
 * The new key, once, in a dialog with a copy button.
 * @param {string} key
 */
function showKey(key) {
  const dialog = /** @type {HTMLDialogElement} */ ($('#key-dialog'));
  const input = /** @type {HTMLInputElement} */ ($('#key-value'));
  const copied = $('#key-copied');
  const copy = $('#key-copy');
  const opener = /** @type {HTMLElement | null} */ (document.activeElement);
  input.value = key;
  copied.textContent = '';
  copy.onclick = async () => {
    try {
      if (!navigator.clipboard) throw new Error('no clipboard');
      await navigator.clipboard.writeText(key);
      copied.textContent = 'Copied to the clipboard.';
    } catch {
      // No clipboard API (a page not served over HTTPS or from localhost), or it was refused.
      input.focus();
      input.select();
      copied.textContent = document.execCommand('copy') ? 'Copied to the clipboard.' : 'Selected: press Ctrl+C (⌘C) to copy.';
    }
  };
  dialog.addEventListener(
    'close',
    () => {
      input.value = '';
      restoreFocus(opener);
    },
    { once: true },
  );
  dialog.showModal();
}

/** @param {import('./app.js').PageContext} ctx */
export async function webhooksPage(ctx) {
  const { main } = ctx;
  const msg = notice();
  const list = h('div');
  main.append(
    h('div', { class: 'page-head' }, heading('Webhooks')),
    h('p', { class: 'muted' }, 'Every API key\u2019s webhooks. Keys make their own through POST /v1/webhooks; here they can be removed.'),
    msg.el,
    list,
  );

  async function load() {
    try {
      const r = await api('GET', '/ui/api/webhooks');
      if (!ctx.alive()) return;
      /** @type {any[]} */
      const hooks = r.webhooks;
      list.replaceChildren(
        hooks.length === 0
          ? h('p', { class: 'empty' }, 'No webhooks.')
          : h(
              'ul',
              { class: 'cards' },
              hooks.map((w) =>
                h(
                  'li',
                  { class: 'card webhook', dataset: { id: w.id } },
                  h('h2', { class: 'mono url' }, w.url),
                  h(
                    'dl',
                    { class: 'kv' },
                    h('div', null, h('dt', null, 'Id'), h('dd', { class: 'mono' }, w.id)),
                    h('div', null, h('dt', null, 'Owner'), h('dd', null, w.owner ?? '(key revoked)')),
                    h('div', null, h('dt', null, 'State'), h('dd', null, badge(w.state), w.disabledReason ? h('span', { class: 'muted small' }, ` ${w.disabledReason}`) : null)),
                    h('div', null, h('dt', null, 'Events'), h('dd', null, w.events?.length ? w.events.join(', ') : 'all')),
                    h('div', null, h('dt', null, 'Waiting'), h('dd', null, String(w.pending ?? 0))),
                    h('div', null, h('dt', null, 'Created'), h('dd', null, time(w.createdAt))),
                  ),
                  w.deliveries?.length
                    ? h(
                        'details',
                        null,
                        h('summary', null, `Recent deliveries (${w.deliveries.length})`),
                        table(
                          `Recent deliveries of ${w.url}`,
                          ['When', 'Event', 'Attempt', 'Answer', 'Time', 'Outcome'],
                          w.deliveries.map((/** @type {any} */ d) =>
                            h(
                              'tr',
                              null,
                              h('td', null, time(d.at)),
                              h('td', { class: 'mono small' }, d.eventId),
                              h('td', { class: 'num' }, d.attempt),
                              h('td', null, d.status !== null && d.status !== undefined ? `HTTP ${d.status}` : d.error ?? '—'),
                              h('td', { class: 'num' }, `${d.durationMs} ms`),
                              h('td', null, badge(d.outcome)),
                            ),
                          ),
                        ),
                      )
                    : h('p', { class: 'muted' }, 'No deliveries yet.'),
                  h(
                    'div',
                    { class: 'row-actions' },
                    removeButton('Delete', w.url, `Delete the webhook ${w.url}? Events waiting for it are dropped.`, async () => {
                      try {
                        await api('DELETE', `/ui/api/webhooks/${seg(w.id)}`);
                        msg.ok(`Webhook ${w.url} deleted.`);
                        await load();
                        restoreFocus(null);
                      } catch (e) {
                        msg.error(e);
                      }
                    }),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      if (ctx.alive()) msg.error(e);
    }
  }

  await load();
}

/** @param {import('./app.js').PageContext} ctx */
export async function usersPage(ctx) {
  const { main } = ctx;
  const msg = notice();
  const address = field('user-address', 'Address', { type: 'text', inputmode: 'email', autocapitalize: 'none', spellcheck: 'false', required: true, autocomplete: 'off' });
  const password = field('user-password', 'Password', { type: 'password', required: true, autocomplete: 'new-password' });
  const sendAs = field('user-send-as', 'May also send as', { type: 'text', autocapitalize: 'none', spellcheck: 'false', placeholder: '@example.com', autocomplete: 'off' });
  const admin = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', id: 'user-admin', name: 'admin' }));
  const list = h('div');

  main.append(
    h('div', { class: 'page-head' }, heading('Users')),
    h('p', { class: 'muted' }, 'Accounts for SMTP submission; admins may also sign in here.'),
    addForm('Add a user', [address.el, password.el, sendAs.el, h('div', { class: 'field check' }, admin, h('label', { for: 'user-admin' }, 'Admin (dashboard)'))], 'Add', async () => {
      const a = address.input.value.trim();
      /** @type {Record<string, unknown>} */
      const body = { address: a, password: password.input.value, admin: admin.checked };
      const extra = splitList(sendAs.input.value);
      if (extra.length) body.sendAs = extra;
      try {
        await api('POST', '/ui/api/users', body);
        msg.ok(`${a} added.`);
        address.input.value = '';
        password.input.value = '';
        sendAs.input.value = '';
        admin.checked = false;
        await load();
        address.input.focus();
      } catch (e) {
        msg.error(e);
      }
    }),
    msg.el,
    list,
  );

  async function load() {
    try {
      const r = await api('GET', '/ui/api/users');
      if (!ctx.alive()) return;
      /** @type {any[]} */
      const users = r.users;
      list.replaceChildren(
        users.length === 0
          ? h('p', { class: 'empty' }, 'No users.')
          : table(
              'Users',
              ['Address', 'Admin', 'May send as', 'Created', 'Actions'],
              users.map((u) =>
                h(
                  'tr',
                  { dataset: { address: u.address } },
                  h('td', { class: 'addr' }, u.address, u.address === session.user ? h('span', { class: 'muted small' }, ' (you)') : null),
                  h('td', null, u.admin ? 'yes' : 'no'),
                  h('td', { class: 'addr' }, u.sendAs?.length ? u.sendAs.join(', ') : '—'),
                  h('td', null, time(u.createdAt)),
                  h(
                    'td',
                    { class: 'actions' },
                    u.address === session.user
                      ? ''
                      : removeButton('Delete', u.address, `Delete the user ${u.address}? They can no longer submit mail${u.admin ? ' or sign in here' : ''}.`, async () => {
                          try {
                            await api('DELETE', `/ui/api/users/${seg(u.address)}`);
                            msg.ok(`${u.address} deleted.`);
                            await load();
                            restoreFocus(null);
                          } catch (e) {
                            msg.error(e);
                          }
                        }),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      if (ctx.alive()) msg.error(e);
    }
  }

  await load();
}
