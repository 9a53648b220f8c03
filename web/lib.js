// Small helpers shared by the pages: building DOM (text only: data never
// goes through innerHTML), talking to /ui/, the confirmation dialog, and
// formatting. No framework: the pages are plain DOM.

/** The session: who is logged in and the CSRF token every state change sends. */
export const session = { user: '', csrf: '' };

/** Set by app.js: what to do when the server says the session is gone (401). */
export const hooks = { unauthorized: () => {} };

/**
 * An element: `attrs` are attributes (true: present, false/null: absent),
 * `on…` are event listeners, `class` and `dataset` as in the DOM.
 * Children are nodes or text (strings and numbers become text nodes).
 * @param {string} tag
 * @param {Record<string, any> | null} [attrs]
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'style' || k.toLowerCase().includes('html')) throw new Error(`h(): ${k} is not allowed (CSP, escaping)`);
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/**
 * @param {Node} el
 * @param {any[]} children
 */
function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/**
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement}
 */
export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`no ${selector}`);
  return /** @type {HTMLElement} */ (el);
}

/** An error answer from the server: its status and the problem's detail. */
export class HttpError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * A JSON request to the dashboard's server side. State changes carry the
 * CSRF token; a 401 (the session ended) sends the user back to the login.
 * @param {'GET'|'POST'|'PUT'|'DELETE'} method
 * @param {string} url
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function api(method, url, body) {
  /** @type {Record<string, string>} */
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') headers['x-csrf-token'] = session.csrf;
  /** @type {Response} */
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new HttpError(0, 'The server did not answer; is Tern running?');
  }
  if (res.status === 401 && !url.startsWith('/ui/login')) {
    hooks.unauthorized();
    throw new HttpError(401, 'Your session has ended; please log in again.');
  }
  // The body is always read to its end (even an empty one), so that the request completes rather than being cut off.
  const text = await res.text().catch(() => '');
  const type = res.headers.get('content-type') ?? '';
  let data = null;
  if (type.includes('json') && text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) throw new HttpError(res.status, problemText(res, data));
  return data;
}

/**
 * @param {Response} res
 * @param {any} p
 */
function problemText(res, p) {
  if (res.status === 429) return p?.detail || 'Too many attempts; wait a little and try again.';
  if (p && typeof p === 'object' && (p.detail || p.title)) {
    const fields = Array.isArray(p.errors) && p.errors.length ? ` (${p.errors.map((/** @type {any} */ e) => `${e.path}: ${e.message}`).join('; ')})` : '';
    return `${p.detail || p.title}${p.detail && fields && !p.detail.includes(p.errors[0].message) ? fields : ''}`;
  }
  return `${res.status} ${res.statusText || 'error'}`;
}

/** `encodeURIComponent` for a path segment. */
export const seg = encodeURIComponent;

/**
 * Asks before a change: the shared <dialog> (modal: focus stays inside,
 * Escape cancels; Cancel has the first focus). Focus returns to the
 * control that asked, or to the page's heading when that is gone.
 * @param {string} title
 * @param {string} text
 * @param {string} action the confirming button's label
 * @returns {Promise<boolean>}
 */
export function confirmAction(title, text, action) {
  const dialog = /** @type {HTMLDialogElement} */ ($('#confirm'));
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = action;
  const opener = /** @type {HTMLElement | null} */ (document.activeElement);
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        restoreFocus(opener);
        resolve(dialog.returnValue === 'ok');
      },
      { once: true },
    );
  });
}

/** @param {HTMLElement | null} el */
export function restoreFocus(el) {
  if (el && el.isConnected && el !== document.body) el.focus();
  else /** @type {HTMLElement | null} */ (document.querySelector('main h1'))?.focus();
}

/**
 * A message line under a heading: errors are alerts, the rest polite status.
 * @returns {{el: HTMLElement, error: (e: unknown) => void, ok: (text: string) => void, clear: () => void}}
 */
export function notice() {
  const el = h('p', { class: 'notice', role: 'status', 'aria-live': 'polite' });
  return {
    el,
    error(e) {
      el.className = 'notice error';
      el.textContent = e instanceof Error ? e.message : String(e);
    },
    ok(text) {
      el.className = 'notice ok';
      el.textContent = text;
    },
    clear() {
      el.className = 'notice';
      el.textContent = '';
    },
  };
}

/**
 * A table in a region that scrolls sideways on a narrow screen (and can be
 * scrolled with the keyboard: it takes focus).
 * @param {string} label
 * @param {string[]} columns
 * @param {HTMLElement[]} rows
 */
export function table(label, columns, rows) {
  // Each cell names its column, for the stacked layout of narrow screens (app.css).
  for (const tr of rows) {
    [...tr.children].forEach((td, i) => {
      if (columns[i] && td.tagName === 'TD' && !td.classList.contains('actions')) td.setAttribute('data-label', columns[i]);
    });
  }
  return h(
    'div',
    { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: 0 },
    h('table', null, h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c)))), h('tbody', null, rows)),
  );
}

/**
 * A page's heading, focusable so that a route change can move focus to it.
 * @param {string} text
 */
export function heading(text) {
  return h('h1', { tabindex: -1 }, text);
}

/**
 * A labelled input (the label wraps nothing: for/id, so both are clear to
 * every reader).
 * @param {string} id
 * @param {string} label
 * @param {Record<string, any>} [attrs]
 */
export function field(id, label, attrs = {}) {
  const input = h('input', { id, name: id, ...attrs });
  return { input: /** @type {HTMLInputElement} */ (input), el: h('div', { class: 'field' }, h('label', { for: id }, label), input) };
}

/** @param {string | number | null | undefined} t */
export function fmtTime(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

/**
 * A <time> element for a date.
 * @param {string | number | null | undefined} t
 */
export function time(t) {
  if (t === null || t === undefined || t === '') return h('span', null, '—');
  const d = new Date(t);
  return h('time', { datetime: Number.isNaN(d.getTime()) ? null : d.toISOString() }, fmtTime(t));
}

/** @param {number} n */
export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** @param {{code: number, enhanced: string | null, text: string} | null | undefined} r */
export function fmtReply(r) {
  if (!r) return '—';
  return [r.code, r.enhanced, r.text].filter((x) => x !== null && x !== undefined && x !== '').join(' ');
}

/**
 * A share as a percentage, or a dash when there is nothing to divide.
 * @param {number} part
 * @param {number} whole
 */
export function pct(part, whole) {
  if (!whole) return '—';
  const p = (100 * part) / whole;
  return `${p >= 99.95 || p < 0.05 ? p.toFixed(0) : p.toFixed(1)} %`;
}

/**
 * A status word as a badge; the word itself carries the meaning (colour
 * only repeats it).
 * @param {string} status
 */
export function badge(status) {
  return h('span', { class: `badge badge-${String(status).replace(/[^a-z-]/g, '')}` }, status);
}

/** @param {string} s */
export function splitList(s) {
  return s
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);
}

/**
 * The live stream (/ui/api/live, server-sent events): `update` gets each
 * update's data. EventSource reconnects by itself after a network error;
 * after a refusal (the session ended) it stops, and a session check sends
 * the user to the login. Returns the function that closes it.
 * @param {{update: (data: any) => void, open?: (again: boolean) => void, down?: (closed: boolean) => void}} on
 */
export function subscribeLive(on) {
  const live = new EventSource('/ui/api/live');
  let opened = false;
  let closed = false;
  live.addEventListener('open', () => {
    on.open?.(opened);
    opened = true;
  });
  live.addEventListener('update', (ev) => {
    /** @type {unknown} */
    let data;
    try {
      data = JSON.parse(/** @type {MessageEvent} */ (ev).data);
    } catch {
      return; // Not JSON: not an update this page understands.
    }
    on.update(data);
  });
  live.addEventListener('error', () => {
    if (closed) return;
    const gone = live.readyState === EventSource.CLOSED;
    on.down?.(gone);
    if (gone) void api('GET', '/ui/api/session').catch(() => {});
  });
  return () => {
    closed = true;
    live.close();
  };
}
