// The dashboard's JSON under /ui/ (/tmp/dashboard-spec.md, the interface
// the front end in web/ is written against; docs/dashboard.md). Mounted on
// the http listener's Fastify instance (ApiDeps.mount), so it shares the
// API's strict UTF-8 JSON parser, its validators (bodies exactly as sent,
// queries coerced) and its problem+json errors (RFC 9457) naming fields.
//
// Every /ui/api route runs `guard` first, before the body is even parsed:
// the session cookie (401), the Origin (403), and for POST/PUT/DELETE the
// X-CSRF-Token header (403). The routes are thin: the work is in
// sessions.ts, stats.ts, search.ts, queue.ts and live.ts.

import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema } from 'fastify';
import { ApiError, fieldError } from '../api/problem.ts';
import { messageView } from '../api/messages.ts';
import { apiKeyNameProblem, hashApiKey, newApiKey } from '../api/keys.ts';
import { suppressionRoutes } from '../api/suppression-routes.ts';
import { webhookRoutes } from '../api/webhook-routes.ts';
import type { ApiKeyRecord, UserRecord } from '../store/store.ts';
import type { UiSession } from '../store/dashboard.ts';
import { hashPassword, preparePassword } from '../store/passwords.ts';
import { isDomain, parseMailbox } from '../smtp/address.ts';
import { MAX_FIELD } from '../server/sasl.ts';
import { LoginRefused, clearedCookie, originMatches, sameSecret, sessionCookie } from './sessions.ts';
import { DEFAULT_PAGE, MAX_PAGE, searchMessages } from './search.ts';
import { queuePage, type QueueState } from './queue.ts';
import type { Range } from './stats.ts';
import type { Dashboard } from './dashboard.ts';

/** The dashboard's own view of the webhook and key APIs: an admin over every key's webhooks. */
const DASHBOARD_VIEWER: ApiKeyRecord = { name: '(dashboard)', hash: '', sendAs: [], admin: true, createdAt: 0 };

export const MAX_QUEUE_PAGE = 1000;
const DEFAULT_QUEUE_PAGE = 200;
/** Patterns per key or user: more is a list to manage elsewhere. */
const MAX_SEND_AS = 100;

const queueId = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9]+$' } as const;
const idParams = { type: 'object', additionalProperties: false, required: ['id'], properties: { id: queueId } } as const;

const loginBody = {
  type: 'object',
  additionalProperties: false,
  required: ['address', 'password'],
  properties: {
    address: { type: 'string', minLength: 1, maxLength: 320 },
    password: { type: 'string', minLength: 1, maxLength: 1024 },
  },
} as const;

const overviewQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { range: { type: 'string', enum: ['hour', 'day', 'month'], default: 'hour' } },
} as const;

const queueQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: { type: 'string', enum: ['queued', 'deferred', 'active', 'held'] },
    domain: { type: 'string', minLength: 1, maxLength: 256 },
    limit: { type: 'integer', minimum: 1, maximum: MAX_QUEUE_PAGE, default: DEFAULT_QUEUE_PAGE },
  },
} as const;

const messagesQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    q: { type: 'string', maxLength: 998 },
    since: { type: 'string', maxLength: 64 },
    until: { type: 'string', maxLength: 64 },
    limit: { type: 'integer', minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE },
    before: queueId,
  },
} as const;

const sendAsList = { type: 'array', maxItems: MAX_SEND_AS, items: { type: 'string', minLength: 1, maxLength: 256 } } as const;

const keyBody = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 64 },
    sendAs: sendAsList,
    admin: { type: 'boolean' },
    messagesPerHour: { type: 'integer', minimum: 0, maximum: 999_999_999 },
  },
} as const;

const keyParams = { type: 'object', additionalProperties: false, required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 64 } } } as const;

const userBody = {
  type: 'object',
  additionalProperties: false,
  required: ['address', 'password'],
  properties: {
    address: { type: 'string', minLength: 3, maxLength: 320 },
    password: { type: 'string', minLength: 1, maxLength: 1024 },
    admin: { type: 'boolean' },
    sendAs: sendAsList,
  },
} as const;

const userParams = { type: 'object', additionalProperties: false, required: ['address'], properties: { address: { type: 'string', minLength: 3, maxLength: 320 } } } as const;
const webhookParams = { type: 'object', additionalProperties: false, required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' } } } as const;

/** Lower-case dot-atom local@domain (RFC 5321 §4.1.2), no address literal, as `tern user` takes them; null when invalid. */
function mailboxOf(s: string): string | null {
  if (s.startsWith('"')) return null;
  try {
    const a = parseMailbox(s.trim());
    return a.literal ? null : `${a.local}@${a.domain}`.toLowerCase();
  } catch {
    return null;
  }
}

/** A send-as list as `tern user --send-as` and `tern apikey --send-as` take it: addresses and @domains, lower case, no repeats. */
function sendAsOf(list: string[] | undefined, own: string | null): string[] {
  const out = new Set<string>();
  (list ?? []).forEach((raw, i) => {
    const item = raw.trim().toLowerCase();
    const norm = item.startsWith('@') ? (isDomain(item.slice(1)) ? item : null) : mailboxOf(item);
    if (!norm) throw fieldError(400, `/body/sendAs/${i}`, 'not an address (local@domain) or @domain');
    if (norm !== own) out.add(norm);
  });
  return [...out];
}

/** ISO 8601 (what Date.parse reads) to epoch ms; 400 naming the field otherwise. */
function timeOf(value: string | undefined, field: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const t = Date.parse(value);
  if (!Number.isFinite(t)) throw fieldError(400, `/query/${field}`, 'not an ISO 8601 date and time');
  return t;
}

/** What a new password must be (as `tern user add` checks it); the problem or undefined. */
function passwordProblem(pw: string, minLength: number): string | undefined {
  const length = [...pw].length;
  if (length < minLength) return `too short: ${length} characters, at least ${minLength} needed (submission.minPasswordLength)`;
  // RFC 8265 §4.2 (OpaqueString) allows no control characters; SASL PLAIN carries at most 255 octets (RFC 4616 §2).
  if (/[\x00-\x1f\x7f]/.test(pw)) return 'contains control characters';
  if (Buffer.byteLength(preparePassword(pw)) > MAX_FIELD) return `longer than ${MAX_FIELD} bytes`;
  return undefined;
}

const iso = (ms: number): string => new Date(ms).toISOString();

function userView(u: UserRecord) {
  return { address: u.address, admin: u.admin === true, sendAs: u.sendAs, messagesPerHour: u.messagesPerHour ?? null, recipientsPerMessage: u.recipientsPerMessage ?? null, createdAt: iso(u.createdAt) };
}

type Handler = (req: FastifyRequest, reply: FastifyReply, session: UiSession) => Promise<unknown>;

/** Registers the dashboard's routes on `app`. `secure`: the listener speaks TLS (the cookie gets Secure). */
export function mountDashboardRoutes(app: FastifyInstance, d: Dashboard, opts: { secure: boolean }): void {
  const { deps, sessions, live } = d;
  const { store, scheduler, log } = deps;
  const current = new WeakMap<FastifyRequest, UiSession>();

  /**
   * Session, then Origin, then (state changes) the CSRF token. A request
   * without a session gets 401 whatever else is wrong with it, so nothing
   * about a route shows before login.
   */
  const guard = (stateChange: boolean) => async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    // Answers hold mail metadata: never kept by a browser or a proxy (OWASP Session Management: no caching).
    reply.header('cache-control', 'no-store');
    const s = sessions.current(req.headers.cookie);
    if (!s) throw new ApiError(401, 'Log in first (POST /ui/login)');
    if (!originMatches(req.headers.origin, req.headers.host)) throw new ApiError(403, 'The Origin header does not match this host');
    if (stateChange) {
      const token = req.headers['x-csrf-token'];
      if (typeof token !== 'string' || !sameSecret(token, s.csrf)) throw new ApiError(403, 'This change needs the X-CSRF-Token header of the session (GET /ui/api/session)');
    }
    current.set(req, s);
  };

  const route = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, schema: FastifySchema, handler: Handler, o: { head?: boolean } = {}): void => {
    app.route({
      method,
      url,
      schema,
      exposeHeadRoute: o.head ?? true,
      onRequest: guard(method !== 'GET'),
      handler: async (req, reply) => handler(req, reply, current.get(req)!),
    });
  };

  /** An admin's change, in the log: who did what (OWASP Logging: an audit trail of administrative actions). */
  const audit = (s: UiSession, action: string, fields: Record<string, unknown> = {}): void => log.info('dashboard', { user: s.user, action, ...fields });

  // ---- session ----

  app.post('/ui/login', {
    schema: { body: loginBody },
    // Login CSRF (a foreign page logging the browser into the attacker's account): the Origin must be ours too.
    onRequest: async (req, reply) => {
      reply.header('cache-control', 'no-store');
      if (!originMatches(req.headers.origin, req.headers.host)) throw new ApiError(403, 'The Origin header does not match this host');
    },
    handler: async (req, reply) => {
      const { address, password } = req.body as { address: string; password: string };
      try {
        const { token, session } = await sessions.login(req.ip, address, password);
        log.info('dashboard login', { user: session.user, ip: req.ip });
        reply.header('set-cookie', sessionCookie(token, opts.secure));
        return { user: session.user, csrf: session.csrf };
      } catch (e) {
        if (!(e instanceof LoginRefused)) throw e;
        // The password is never logged; the address is (it is what admins look for).
        log.warn('dashboard login refused', { user: address.toLowerCase(), ip: req.ip, locked: e.status === 429 });
        throw new ApiError(e.status, e.message);
      }
    },
  });

  app.post('/ui/logout', {
    onRequest: guard(true),
    handler: async (req, reply) => {
      const s = current.get(req)!;
      sessions.logout(s);
      live.end({ sessionHash: s.tokenHash });
      audit(s, 'logout');
      return reply.code(204).header('set-cookie', clearedCookie(opts.secure)).send();
    },
  });

  route('GET', '/ui/api/session', {}, async (_req, _reply, s) => ({ user: s.user, csrf: s.csrf, expiresAt: iso(s.expiresAt) }));

  // ---- overview and live ----

  route('GET', '/ui/api/overview', { querystring: overviewQuery }, async (req) => {
    const { range } = req.query as { range: Range };
    // Events still gathering for the store are written first, so a message just sent is in the figures.
    await deps.flushEvents();
    return d.overview(range);
  });

  route('GET', '/ui/api/live', {}, async (_req, reply, s) => {
    if (live.full) throw new ApiError(503, 'Too many live streams are open; try again later');
    reply.hijack();
    live.open(reply.raw, s, () => sessions.stillValid(s));
    // No HEAD twin: a HEAD would hold a stream open that can never carry anything.
  }, { head: false });

  // ---- queue ----

  route('GET', '/ui/api/queue', { querystring: queueQuery }, async (req) => {
    const q = req.query as { state?: QueueState; domain?: string; limit: number };
    return queuePage(scheduler, { state: q.state, domain: q.domain }, q.limit);
  });

  const actions: Record<'retry' | 'hold' | 'release' | 'delete', (id: string) => Promise<boolean>> = {
    retry: async (id) => {
      const r = scheduler.retry(id);
      if (r?.held) throw new ApiError(409, `${id} is held: release it to deliver it`);
      return r !== null;
    },
    hold: (id) => scheduler.hold(id),
    release: (id) => scheduler.release(id),
    delete: (id) => scheduler.delete(id),
  };
  for (const [action, run] of Object.entries(actions)) {
    route('POST', `/ui/api/queue/:id/${action}`, { params: idParams }, async (req, _reply, s) => {
      const { id } = req.params as { id: string };
      if (!(await run(id))) throw new ApiError(404, `No message ${id} in the queue`);
      audit(s, `queue ${action}`, { id });
      live.changed();
      return { ok: true };
    });
  }

  // ---- messages ----

  route('GET', '/ui/api/messages', { querystring: messagesQuery }, async (req) => {
    const q = req.query as { q?: string; since?: string; until?: string; limit: number; before?: string };
    const since = timeOf(q.since, 'since');
    const until = timeOf(q.until, 'until');
    await deps.flushEvents();
    return searchMessages(store.dashboard, { q: q.q, since, until, limit: q.limit, before: q.before });
  });

  route('GET', '/ui/api/messages/:id', { params: idParams }, async (req) => {
    const { id } = req.params as { id: string };
    await deps.flushEvents();
    const found = store.messageEvents(id, { admin: true });
    const shown = scheduler.show(id);
    if (!found && !shown) throw new ApiError(404, `No message ${id}`);
    const queued = shown ? (({ manualAttempts: _m, envelope: _e, dsnSuppressed: _d, ...summary }) => summary)(shown) : null;
    const view = found
      ? messageView(found.message, found.events)
      : {
          id,
          messageId: shown!.envelope.messageId ?? null,
          subject: shown!.envelope.subject ?? null,
          from: shown!.from,
          createdAt: shown!.createdAt,
          tags: shown!.envelope.tags ?? null,
          recipients: [],
          events: [],
        };
    return { ...view, queue: queued, headers: await d.headers(id) };
  });

  // ---- suppressions: the API's own routes (same validation, same answers), behind the session ----

  for (const r of suppressionRoutes({ list: deps.suppressions })) {
    route(r.method, r.url.replace(/^\/v1\//, '/ui/api/'), r.schema as FastifySchema, async (req, reply, s) => {
      const out = await r.handler(req, DASHBOARD_VIEWER, reply);
      if (r.method !== 'GET') audit(s, `suppression ${r.method === 'PUT' ? 'put' : 'delete'}`, { address: (req.params as { address?: string }).address });
      return out;
    });
  }

  // ---- API keys ----

  route('GET', '/ui/api/keys', {}, async () => ({
    keys: store.listApiKeys().map((k) => ({ name: k.name, sendAs: k.sendAs, admin: k.admin, messagesPerHour: k.messagesPerHour ?? null, createdAt: iso(k.createdAt) })),
  }));

  route('POST', '/ui/api/keys', { body: keyBody }, async (req, reply, s) => {
    const body = req.body as { name: string; sendAs?: string[]; admin?: boolean; messagesPerHour?: number };
    const problem = apiKeyNameProblem(body.name);
    if (problem) throw fieldError(400, '/body/name', problem);
    const key = newApiKey();
    const record: ApiKeyRecord = { name: body.name, hash: hashApiKey(key), sendAs: sendAsOf(body.sendAs, null), admin: body.admin === true, messagesPerHour: body.messagesPerHour, createdAt: Date.now() };
    if (!store.addApiKey(record)) throw new ApiError(409, `A key named ${body.name} exists (revoke it first)`);
    deps.apiKeys?.clear();
    audit(s, 'key create', { name: body.name, admin: record.admin });
    // The key itself is in this answer only; the store keeps its SHA-256.
    return reply.code(201).send({ name: body.name, key });
  });

  route('DELETE', '/ui/api/keys/:name', { params: keyParams }, async (req, reply, s) => {
    const { name } = req.params as { name: string };
    if (!store.revokeApiKey(name)) throw new ApiError(404, `No key ${name}`);
    deps.apiKeys?.clear();
    audit(s, 'key revoke', { name });
    return reply.code(204).send();
  });

  // ---- webhooks: every key's ----

  const webhooks = deps.webhooks;
  if (webhooks) {
    const v1List = webhookRoutes(webhooks).find((r) => r.method === 'GET' && r.url === '/v1/webhooks')!;
    // GET /v1/webhooks with an admin key lists every key's, each as the API shows it (owner: the key's name).
    route('GET', '/ui/api/webhooks', {}, async (req, reply) => v1List.handler(req, DASHBOARD_VIEWER, reply));
    route('DELETE', '/ui/api/webhooks/:id', { params: webhookParams }, async (req, reply, s) => {
      const { id } = req.params as { id: string };
      if (!webhooks.remove(DASHBOARD_VIEWER, id)) throw new ApiError(404, `No webhook ${id}`);
      audit(s, 'webhook delete', { id });
      return reply.code(204).send();
    });
  }

  // ---- users ----

  route('GET', '/ui/api/users', {}, async () => ({ users: store.listUsers().map(userView) }));

  route('POST', '/ui/api/users', { body: userBody }, async (req, reply, s) => {
    const body = req.body as { address: string; password: string; admin?: boolean; sendAs?: string[] };
    const address = mailboxOf(body.address);
    if (!address) throw fieldError(400, '/body/address', 'not an address (local@domain)');
    const problem = passwordProblem(body.password, deps.minPasswordLength());
    if (problem) throw fieldError(400, '/body/password', problem);
    const sendAs = sendAsOf(body.sendAs, address);
    if (store.getUser(address)) throw new ApiError(409, `${address} exists`);
    const record: UserRecord = { address, passwordHash: await hashPassword(body.password), sendAs, admin: body.admin === true ? true : undefined, createdAt: Date.now() };
    // Checked again after the hash (it takes a while): two adds of one address do not overwrite each other.
    if (store.getUser(address)) throw new ApiError(409, `${address} exists`);
    store.putUser(record);
    audit(s, 'user add', { address, admin: record.admin === true });
    return reply.code(201).send(userView(record));
  });

  route('DELETE', '/ui/api/users/:address', { params: userParams }, async (req, reply, s) => {
    const raw = (req.params as { address: string }).address;
    const address = mailboxOf(raw);
    if (!address) throw fieldError(400, '/params/address', 'not an address (local@domain)');
    if (address === s.user) throw new ApiError(409, 'You cannot delete your own account while logged in with it');
    if (!store.deleteUser(address)) throw new ApiError(404, `No user ${address}`);
    sessions.endUser(address);
    live.end({ user: address });
    audit(s, 'user delete', { address });
    return reply.code(204).send();
  });

  // Anything else under /ui/api: 401 before login (nothing about the routes shows), 404 after.
  app.all('/ui/api/*', { onRequest: guard(false) }, async (req) => {
    throw new ApiError(404, `No route ${req.method} ${req.url.split('?')[0]}`);
  });
}
