// The Tern dashboard: one page, routed by the hash (#/overview, #/queue,
// #/messages, #/messages/<id>, #/suppressions, #/keys, #/webhooks,
// #/users). The session lives in an HttpOnly cookie; this script only
// keeps the CSRF token that state changes send back as X-CSRF-Token.

import { $, HttpError, api, hooks, session } from './lib.js';
import { overviewPage } from './overview.js';
import { queuePage } from './queue.js';
import { messagePage, messagesPage } from './messages.js';
import { keysPage, suppressionsPage, usersPage, webhooksPage } from './admin.js';

/**
 * A page draws itself into `main` and may return a function that stops
 * what it started (timers, the live stream).
 * @typedef {{ main: HTMLElement, rest: string[], alive: () => boolean }} PageContext
 * @typedef {(ctx: PageContext) => Promise<(() => void) | void> | (() => void) | void} Page
 */

/** @type {Record<string, {title: string, page: Page}>} */
const ROUTES = {
  overview: { title: 'Overview', page: overviewPage },
  queue: { title: 'Queue', page: queuePage },
  messages: { title: 'Messages', page: (ctx) => (ctx.rest[0] ? messagePage(ctx) : messagesPage(ctx)) },
  suppressions: { title: 'Suppressions', page: suppressionsPage },
  keys: { title: 'API keys', page: keysPage },
  webhooks: { title: 'Webhooks', page: webhooksPage },
  users: { title: 'Users', page: usersPage },
};

const loading = $('#loading');
const login = $('#login');
const shell = $('#shell');
const main = $('#main');

/** @type {(() => void) | null} */
let stopPage = null;
let generation = 0;
let signedIn = false;

function parseHash() {
  const path = location.hash.replace(/^#\/?/, '').split('?')[0] ?? '';
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { name: parts[0] ?? '', rest: parts.slice(1) };
}

async function route() {
  if (!signedIn) return;
  const { name, rest } = parseHash();
  const r = ROUTES[name];
  if (!r) {
    // An unknown or empty route: the overview, without a new history entry.
    history.replaceState(null, '', '#/overview');
    return route();
  }
  stopPage?.();
  stopPage = null;
  const mine = ++generation;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${r.title} · Tern`;
  main.replaceChildren();
  main.dataset.page = name;
  main.setAttribute('aria-busy', 'true');
  try {
    const stop = await r.page({ main, rest, alive: () => mine === generation && signedIn });
    if (mine !== generation) stop?.();
    else stopPage = stop ?? null;
  } catch (e) {
    if (!(e instanceof HttpError && e.status === 401) && mine === generation) {
      main.replaceChildren();
      const h1 = document.createElement('h1');
      h1.tabIndex = -1;
      h1.textContent = r.title;
      const p = document.createElement('p');
      p.className = 'notice error';
      p.setAttribute('role', 'alert');
      p.textContent = e instanceof Error ? e.message : String(e);
      main.append(h1, p);
    }
  } finally {
    if (mine === generation) main.removeAttribute('aria-busy');
  }
  // Focus goes to the new page's heading, so that a screen reader announces it and Tab starts there.
  if (mine === generation && signedIn) /** @type {HTMLElement | null} */ (main.querySelector('h1'))?.focus({ preventScroll: false });
}

/** @param {{user: string, csrf: string}} s */
function enter(s) {
  session.user = s.user;
  session.csrf = s.csrf;
  signedIn = true;
  $('#who').textContent = s.user;
  loading.hidden = true;
  login.hidden = true;
  shell.hidden = false;
  void route();
}

function leave() {
  if (!signedIn && !login.hidden) return;
  signedIn = false;
  generation++;
  stopPage?.();
  stopPage = null;
  session.user = '';
  session.csrf = '';
  main.replaceChildren();
  loading.hidden = true;
  shell.hidden = true;
  login.hidden = false;
  /** @type {HTMLInputElement} */ ($('#login-password')).value = '';
  document.title = 'Sign in · Tern';
  const address = /** @type {HTMLInputElement} */ ($('#login-address'));
  (address.value ? /** @type {HTMLInputElement} */ ($('#login-password')) : address).focus();
}

hooks.unauthorized = () => {
  if (signedIn) {
    leave();
    $('#login-error').textContent = 'Your session has ended; please sign in again.';
  }
};

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = /** @type {HTMLFormElement} */ (ev.currentTarget);
  const error = $('#login-error');
  const button = /** @type {HTMLButtonElement} */ (form.querySelector('button[type=submit]'));
  const address = /** @type {HTMLInputElement} */ ($('#login-address')).value.trim();
  const password = /** @type {HTMLInputElement} */ ($('#login-password')).value;
  error.textContent = '';
  button.disabled = true;
  try {
    const s = await api('POST', '/ui/login', { address, password });
    enter(s);
  } catch (e) {
    // 401 and 429 carry the server's words (the same for every wrong login); the rest too.
    error.textContent = e instanceof Error ? e.message : String(e);
    /** @type {HTMLInputElement} */ ($('#login-password')).select();
  } finally {
    button.disabled = false;
  }
});

$('#logout').addEventListener('click', async () => {
  try {
    await api('POST', '/ui/logout');
  } catch {
    // Gone already, or the server is down: the page forgets the session either way.
  }
  $('#login-error').textContent = '';
  leave();
});

// The skip link moves focus without touching the hash (the hash is the route).
$('#skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  const target = shell.hidden ? login : main;
  (/** @type {HTMLElement | null} */ (target.querySelector('h1')) ?? target).focus();
});

window.addEventListener('hashchange', () => void route());

// Already signed in (the cookie)? Otherwise the login form.
try {
  enter(await api('GET', '/ui/api/session'));
} catch (e) {
  leave();
  if (!(e instanceof HttpError && e.status === 401)) $('#login-error').textContent = e instanceof Error ? e.message : String(e);
}
