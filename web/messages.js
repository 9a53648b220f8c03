// Message search (address, queue id, Message-ID, subject words; a date
// range) and a message's page: its envelope, its header section while it
// is still in the spool, and the timeline of every event with each
// attempt's relay, TLS and reply.

import { actionButtons, queueAction } from './queue.js';
import { api, badge, fmtBytes, fmtReply, h, heading, notice, seg, table, time } from './lib.js';

const PAGE = 50;

/** The last search, so that "back" from a message finds the results again. */
/** @type {{q: string, since: string, until: string, results: any[], next: string | null, searched: boolean}} */
const last = { q: '', since: '', until: '', results: [], next: null, searched: false };

/**
 * A local date (YYYY-MM-DD) as the ISO instant its day starts at, or that
 * of the day after (`end`), so that "until" includes the whole day.
 * @param {string} day
 * @param {boolean} end
 */
function dayStart(day, end) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(y ?? 1970, (m ?? 1) - 1, (d ?? 1) + (end ? 1 : 0)).toISOString();
}

/** @param {import('./app.js').PageContext} ctx */
export async function messagesPage(ctx) {
  const { main } = ctx;
  const msg = notice();
  const q = /** @type {HTMLInputElement} */ (
    h('input', { id: 'search-q', name: 'q', type: 'search', autocapitalize: 'none', spellcheck: 'false', value: last.q, 'aria-describedby': 'search-help' })
  );
  const since = /** @type {HTMLInputElement} */ (h('input', { id: 'search-since', name: 'since', type: 'date', value: last.since }));
  const until = /** @type {HTMLInputElement} */ (h('input', { id: 'search-until', name: 'until', type: 'date', value: last.until }));
  const status = h('p', { class: 'muted', role: 'status' });
  const results = h('div');
  const more = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', hidden: true, onclick: () => void search(true) }, 'Older results'));
  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Search messages' },
    h(
      'div',
      { class: 'field grow' },
      h('label', { for: 'search-q' }, 'Search'),
      q,
      h('small', { id: 'search-help', class: 'muted' }, 'An address (sender or recipient), a queue id, a Message-ID, or words of the subject. Empty: the newest messages.'),
    ),
    h('div', { class: 'field' }, h('label', { for: 'search-since' }, 'From (date)'), since),
    h('div', { class: 'field' }, h('label', { for: 'search-until' }, 'To (date)'), until),
    h('div', { class: 'field buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Search')),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void search(false);
  });
  main.append(h('div', { class: 'page-head' }, heading('Messages')), form, msg.el, status, results, h('p', null, more));

  function render() {
    status.textContent = last.results.length === 0 ? 'No messages found.' : `${last.results.length}${last.next ? '+' : ''} message${last.results.length === 1 ? '' : 's'}, newest first.`;
    more.hidden = !last.next;
    results.replaceChildren(
      last.results.length === 0
        ? ''
        : table(
            'Search results',
            ['Received', 'From', 'Subject', 'Recipients', 'Message'],
            last.results.map((m) =>
              h(
                'tr',
                { dataset: { id: m.id } },
                h('td', null, time(m.createdAt)),
                h('td', { class: 'addr' }, m.from || '<>'),
                h('td', null, h('a', { href: `#/messages/${seg(m.id)}` }, m.subject || '(no subject)')),
                h('td', null, h('ul', { class: 'plain' }, m.recipients.map((/** @type {any} */ r) => h('li', null, h('span', { class: 'addr' }, r.address), ' ', badge(r.status))))),
                h('td', null, h('a', { href: `#/messages/${seg(m.id)}`, class: 'mono', 'aria-label': `Message ${m.id}` }, m.id)),
              ),
            ),
          ),
    );
  }

  /** @param {boolean} older */
  async function search(older) {
    const p = new URLSearchParams({ limit: String(PAGE) });
    if (!older) {
      last.q = q.value.trim();
      last.since = since.value;
      last.until = until.value;
    }
    if (last.q) p.set('q', last.q);
    if (last.since) p.set('since', dayStart(last.since, false));
    if (last.until) p.set('until', dayStart(last.until, true));
    if (older && last.next) p.set('before', last.next);
    msg.clear();
    try {
      const r = await api('GET', `/ui/api/messages?${p}`);
      if (!ctx.alive()) return;
      last.results = older ? [...last.results, ...r.messages] : r.messages;
      last.next = r.next ?? null;
      last.searched = true;
      render();
    } catch (e) {
      if (ctx.alive()) msg.error(e);
    }
  }

  if (last.searched) render();
  else await search(false);
}

/** Events drawn as a timeline: what happened, to whom, through which relay, with which reply. */
const TYPE_TEXT = {
  queued: 'Queued',
  delivered: 'Delivered',
  deferred: 'Deferred',
  bounced: 'Bounced',
  expired: 'Expired',
  suppressed: 'Suppressed',
  complained: 'Complaint',
  delayed: 'Delay warning sent',
};

/** @param {import('./app.js').PageContext} ctx */
export async function messagePage(ctx) {
  const { main } = ctx;
  const id = ctx.rest[0] ?? '';
  const msg = notice();
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/messages' }, 'Messages')), h('div', { class: 'page-head' }, heading(`Message ${id}`)), msg.el);
  const body = h('div');
  main.append(body);

  async function load() {
    /** @type {any} */
    let m;
    try {
      m = await api('GET', `/ui/api/messages/${seg(id)}`);
    } catch (e) {
      if (!ctx.alive()) return;
      if (/** @type {any} */ (e).status === 404) msg.error(`No message ${id} is known: it may be older than the events kept, or the id is wrong.`);
      else msg.error(e);
      return;
    }
    if (!ctx.alive()) return;
    /** @type {any[]} */
    const events = m.events ?? [];
    body.replaceChildren(
      h(
        'section',
        { class: 'card', 'aria-labelledby': 'env-h' },
        h('h2', { id: 'env-h' }, 'Envelope'),
        h(
          'dl',
          { class: 'kv' },
          kv('Subject', m.subject || '(no subject)'),
          kv('From (envelope)', h('span', { class: 'addr' }, m.from || '<>')),
          kv('Queue id', h('span', { class: 'mono' }, m.id)),
          kv('Message-ID', h('span', { class: 'mono' }, m.messageId || '—')),
          kv('Received', time(m.createdAt)),
          m.tags && Object.keys(m.tags).length ? kv('Tags', Object.entries(m.tags).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`))) : null,
        ),
        table(
          'Recipients',
          ['Recipient', 'Status', 'Attempts', 'Last reply'],
          (m.recipients ?? []).map((/** @type {any} */ r) => h('tr', null, h('td', { class: 'addr' }, r.address), h('td', null, badge(r.status)), h('td', { class: 'num' }, r.attempts), h('td', { class: 'reply' }, fmtReply(r.lastReply)))),
        ),
      ),
      m.queue ? queueCard(m.queue) : h('p', { class: 'muted' }, 'Not in the queue any more.'),
      h(
        'section',
        { class: 'card', 'aria-labelledby': 'tl-h' },
        h('h2', { id: 'tl-h' }, `Timeline (${events.length} event${events.length === 1 ? '' : 's'})`),
        events.length === 0 ? h('p', { class: 'muted' }, 'No events.') : h('ol', { class: 'timeline' }, events.map(eventItem)),
      ),
      m.headers !== null && m.headers !== undefined
        ? h('section', { class: 'card', 'aria-labelledby': 'hd-h' }, h('h2', { id: 'hd-h' }, 'Header section'), h('pre', { class: 'headers', tabindex: 0, 'aria-label': 'Header section' }, m.headers))
        : h('p', { class: 'muted' }, 'The headers are shown while the message is still in the spool.'),
    );
  }

  /** @param {any} qs */
  function queueCard(qs) {
    return h(
      'section',
      { class: 'card', 'aria-labelledby': 'q-h' },
      h('h2', { id: 'q-h' }, 'In the queue'),
      h('dl', { class: 'kv' }, kv('State', badge(qs.state)), kv('Attempts', String(qs.attempts)), kv('Next attempt', qs.state === 'held' ? '—' : time(qs.nextAttempt)), kv('Size', fmtBytes(qs.size))),
      actionButtons(qs, async (action) => {
        if (!(await queueAction(action, qs.id, msg))) return;
        await load();
        /** @type {HTMLElement | null} */ (main.querySelector('h1'))?.focus();
      }),
    );
  }

  await load();
}

/**
 * @param {string} label
 * @param {any} value
 */
function kv(label, value) {
  return h('div', null, h('dt', null, label), h('dd', null, value));
}

/** @param {any} e */
function eventItem(e) {
  const d = e.data ?? {};
  const details = [
    d.attempt ? kv('Attempt', String(d.attempt)) : null,
    d.source && e.type === 'queued' ? kv('Source', d.source) : null,
    d.transport ? kv('Transport', d.transport) : null,
    d.relay ? kv('Relay', `${d.relay.host} [${d.relay.ip}]:${d.relay.port}`) : null,
    d.tls ? kv('TLS', [d.tls.version, d.tls.cipher, d.tls.verified === true ? 'certificate verified' : d.tls.verified === false ? 'certificate not verified' : ''].filter(Boolean).join(' · ')) : d.relay ? kv('TLS', 'none (plain text)') : null,
    d.reply ? kv('Reply', h('span', { class: 'reply' }, fmtReply(d.reply))) : null,
    d.bounceClass ? kv('Bounce class', d.bounceClass) : null,
  ];
  return h(
    'li',
    { class: `event event-${String(e.type).replace(/[^a-z]/g, '')}`, dataset: { type: e.type } },
    h('div', { class: 'event-head' }, time(e.timestamp), ' ', badge(e.type), ' ', h('span', null, TYPE_TEXT[/** @type {keyof TYPE_TEXT} */ (e.type)] ?? e.type), e.recipient ? [' · ', h('span', { class: 'addr' }, e.recipient)] : null),
    details.some(Boolean) ? h('dl', { class: 'kv event-data' }, details) : null,
  );
}
