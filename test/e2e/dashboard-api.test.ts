// The dashboard's server side end to end (issue 14; /tmp/dashboard-spec.md):
// a real server with smtp and http listeners, real fetch, an admin made by
// the real `tern user add --admin` code. Nothing without a session; the
// cookie's attributes; CSRF token and Origin on every state change; the
// overview and the live stream move after an SMTP send; a deferred message
// (its MX a closed loopback port, served by the test DNS server) is retried,
// held, released and deleted from the queue page's routes; the search finds
// by address, Message-ID and subject; logout ends the session; failed
// logins are throttled (last: it locks this client out).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { PassThrough } from 'node:stream';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { runUser } from '../../src/cli/user.ts';
import { openStore } from '../../src/store/store.ts';
import { tokenHash } from '../../src/dashboard/sessions.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ALICE, freePort, waitFor, writeConfig } from '../helpers/server.ts';
import { open, sendMail } from './smtp-kit.ts';

const ADMIN = { address: 'root@tern.test', password: 'root-dashboard-pw' };
const PLAIN_USER = { address: 'bob@tern.test', password: 'bob-submission-pw' };

type Json = Record<string, unknown>;

async function addUser(file: string, address: string, password: string, ...flags: string[]): Promise<void> {
  const stdin = new PassThrough();
  stdin.end(`${password}\n`);
  const out: string[] = [];
  const sink = { write: (s: string) => out.push(s) };
  assert.equal(await runUser(loadConfig(file), ['add', address, ...flags], { stdin, stdout: sink, stderr: sink, isTTY: false }), 0, out.join(''));
}

describe('dashboard HTTP API', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let dns: DnsServer;
  let tern: RunningTern;
  let base: string;
  let host: string;
  let smtpPort: number;
  /** The admin's session: the cookie pair and the CSRF token. */
  let cookie = '';
  let csrf = '';

  before(async () => {
    dns = await startDnsServer({
      'later.test': { MX: [{ preference: 10, exchange: 'mx.later.test' }] },
      'mx.later.test': { A: ['127.0.0.6'] },
    });
    // Nobody listens there: every attempt is deferred (451 4.4.1) until the test deletes the message.
    const closedPort = await freePort('127.0.0.6');
    cfg = writeConfig({
      listeners: [
        { role: 'smtp', address: '127.0.0.1', port: 0 },
        { role: 'http', address: '127.0.0.1', port: 0 },
      ],
      trustedNetworks: ['127.0.0.0/8'],
      dns: { servers: [dns.address], timeout: '1s' },
      outbound: { port: closedPort, timeouts: { connect: '1s' } },
      queue: { retrySchedule: ['1h'] },
    });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    const httpPort = tern.ports.find((p) => p.role === 'http')!.port;
    host = `127.0.0.1:${httpPort}`;
    base = `http://${host}`;
    smtpPort = tern.ports.find((p) => p.role === 'smtp')!.port;
    // The real CLI, on the running server's store (WAL): one admin, one plain submission user.
    await addUser(cfg.file, ADMIN.address, ADMIN.password, '--admin');
    await addUser(cfg.file, PLAIN_USER.address, PLAIN_USER.password);
  });

  after(async () => {
    await tern?.stop(500);
    await dns?.close();
    if (cfg) fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  const call = (path: string, init: RequestInit & { session?: boolean; token?: string | null } = {}) => {
    const { session = true, token, ...rest } = init;
    const headers: Record<string, string> = { ...(rest.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(rest.headers as Record<string, string> | undefined) };
    if (session && cookie) headers.cookie = cookie;
    if (token !== undefined && token !== null) headers['x-csrf-token'] = token;
    return fetch(base + path, { ...rest, headers });
  };
  /** A state change with the session's CSRF token. */
  const change = (method: string, path: string, body?: unknown) => call(path, { method, token: csrf, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const json = async <T = Json>(res: Response, status = 200): Promise<T> => {
    const text = await res.text();
    assert.equal(res.status, status, text);
    return JSON.parse(text) as T;
  };
  async function expectProblem(res: Response, status: number, path?: string): Promise<{ detail: string; errors?: { path: string }[] }> {
    const text = await res.text();
    assert.equal(res.status, status, text);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    const p = JSON.parse(text) as { status: number; detail: string; errors?: { path: string }[] };
    assert.equal(p.status, status);
    if (path !== undefined) assert.ok(p.errors?.some((e) => e.path === path), `${path} in ${text}`);
    return p;
  }
  const login = (address: string, password: string, headers: Record<string, string> = {}) =>
    fetch(`${base}/ui/login`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ address, password }) });

  async function smtpSend(to: string[], subject: string, messageId: string): Promise<string> {
    const c = await open(smtpPort);
    try {
      return await sendMail(c, 'alice@tern.test', to, `From: alice@tern.test\r\nTo: ${to.join(', ')}\r\nSubject: ${subject}\r\nMessage-ID: ${messageId}\r\n\r\nHello.\r\n`);
    } finally {
      c.close();
    }
  }

  const ROUTES: [string, string][] = [
    ['GET', '/ui/api/session'],
    ['GET', '/ui/api/overview'],
    ['GET', '/ui/api/overview?range=month'],
    ['GET', '/ui/api/live'],
    ['GET', '/ui/api/queue'],
    ['POST', '/ui/api/queue/0ABC/retry'],
    ['POST', '/ui/api/queue/0ABC/hold'],
    ['POST', '/ui/api/queue/0ABC/release'],
    ['POST', '/ui/api/queue/0ABC/delete'],
    ['GET', '/ui/api/messages?q=alice@tern.test'],
    ['GET', '/ui/api/messages/0ABC'],
    ['GET', '/ui/api/suppressions'],
    ['PUT', '/ui/api/suppressions/x@y.test'],
    ['DELETE', '/ui/api/suppressions/x@y.test'],
    ['GET', '/ui/api/keys'],
    ['POST', '/ui/api/keys'],
    ['DELETE', '/ui/api/keys/ops'],
    ['GET', '/ui/api/webhooks'],
    ['DELETE', '/ui/api/webhooks/wh_1'],
    ['GET', '/ui/api/users'],
    ['POST', '/ui/api/users'],
    ['DELETE', '/ui/api/users/root@tern.test'],
    ['GET', '/ui/api/no-such-route'],
    ['POST', '/ui/logout'],
  ];

  it('gives nothing without a session: 401 problem+json on every route, whatever the body', async () => {
    for (const [method, path] of ROUTES) {
      const res = await call(path, { method, session: false, ...(method === 'GET' ? {} : { body: '{"anything": 1}' }) });
      await expectProblem(res, 401);
    }
    // A cookie that names no session is no session.
    for (const bogus of ['tern_session=made-up', 'tern_session=', 'other=1']) {
      await expectProblem(await fetch(`${base}/ui/api/overview`, { headers: { cookie: bogus } }), 401);
    }
  });

  it('logs an admin in: 200 {user, csrf}, an HttpOnly SameSite=Strict cookie for /', async () => {
    const res = await login('Root@Tern.test', ADMIN.password);
    const body = await json<{ user: string; csrf: string }>(res);
    assert.equal(body.user, ADMIN.address);
    assert.match(body.csrf, /^[A-Za-z0-9_-]{43}$/);
    const setCookie = res.headers.getSetCookie();
    assert.equal(setCookie.length, 1);
    const attrs = setCookie[0]!.split(';').map((s) => s.trim());
    assert.match(attrs[0]!, /^tern_session=[A-Za-z0-9_-]{43}$/);
    assert.ok(attrs.includes('HttpOnly'), setCookie[0]);
    assert.ok(attrs.includes('SameSite=Strict'), setCookie[0]);
    assert.ok(attrs.includes('Path=/'), setCookie[0]);
    assert.ok(!attrs.includes('Secure'), 'plain http: no Secure (the listener has no tls)');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    cookie = attrs[0]!;
    csrf = body.csrf;
    const session = await json<{ user: string; csrf: string }>(await call('/ui/api/session'));
    assert.deepEqual([session.user, session.csrf], [ADMIN.address, csrf]);
  });

  it('refuses a state change without the CSRF token, with a wrong one, or from another Origin (403)', async () => {
    const body = JSON.stringify({ name: 'from-ui', sendAs: ['alice@tern.test'], admin: false });
    await expectProblem(await call('/ui/api/keys', { method: 'POST', body }), 403);
    await expectProblem(await call('/ui/api/keys', { method: 'POST', body, token: csrf.slice(0, -1) + (csrf.endsWith('A') ? 'B' : 'A') }), 403);
    await expectProblem(await call('/ui/api/keys', { method: 'POST', body, token: '' }), 403);
    await expectProblem(await call('/ui/api/keys', { method: 'POST', body, token: csrf, headers: { origin: 'http://evil.test' } }), 403);
    await expectProblem(await call('/ui/api/keys', { method: 'POST', body, token: csrf, headers: { origin: 'null' } }), 403);
    await expectProblem(await call('/ui/api/queue/0ABC/delete', { method: 'POST' }), 403);
    await expectProblem(await call('/ui/logout', { method: 'POST' }), 403);
    // Nothing was made by the refused requests.
    const keys = await json<{ keys: { name: string }[] }>(await call('/ui/api/keys'));
    assert.deepEqual(keys.keys, []);
    // Login from a foreign page (login CSRF) is refused too.
    await expectProblem(await login(ADMIN.address, ADMIN.password, { origin: 'http://evil.test' }), 403);
  });

  it('with the token (and our own Origin) the change is made: API keys', async () => {
    await expectProblem(await change('POST', '/ui/api/keys', { name: 'bad name!', sendAs: [] }), 400, '/body/name');
    await expectProblem(await change('POST', '/ui/api/keys', { name: 'x', sendAs: ['not an address'] }), 400, '/body/sendAs/0');
    await expectProblem(await change('POST', '/ui/api/keys', { name: 'x', bogus: 1 }), 400, '/body/bogus');
    const made = await json<{ name: string; key: string }>(
      await call('/ui/api/keys', { method: 'POST', token: csrf, headers: { origin: base }, body: JSON.stringify({ name: 'from-ui', sendAs: ['Alice@tern.test', '@catch.test'], admin: false, messagesPerHour: 50 }) }),
      201,
    );
    assert.equal(made.name, 'from-ui');
    assert.match(made.key, /^tern_/);
    // The key works on the API at once.
    assert.equal((await fetch(`${base}/v1/events`, { headers: { authorization: `Bearer ${made.key}` } })).status, 200);
    await expectProblem(await change('POST', '/ui/api/keys', { name: 'from-ui' }), 409);
    const keys = await json<{ keys: Json[] }>(await call('/ui/api/keys'));
    assert.deepEqual(keys.keys.map((k) => [k.name, k.sendAs, k.admin, k.messagesPerHour]), [['from-ui', ['alice@tern.test', '@catch.test'], false, 50]]);
    assert.ok(!JSON.stringify(keys).includes(made.key) && !JSON.stringify(keys).includes('hash'));
    assert.equal((await change('DELETE', '/ui/api/keys/from-ui')).status, 204);
    await expectProblem(await change('DELETE', '/ui/api/keys/from-ui'), 404);
    assert.equal((await fetch(`${base}/v1/events`, { headers: { authorization: `Bearer ${made.key}` } })).status, 401, 'revoked');
  });

  /** The overview's totals over the hour. */
  async function overviewTotals(): Promise<{ received: number; delivered: number; o: Json }> {
    const o = await json<{ series: Record<string, number[]> } & Json>(await call('/ui/api/overview?range=hour'));
    const sum = (s: string) => o.series[s]!.reduce((a, b) => a + b, 0);
    return { received: sum('received'), delivered: sum('delivered'), o };
  }

  it('the overview and the live stream move after an SMTP send', async () => {
    const before = await overviewTotals();
    const o = before.o as { range: string; buckets: number[]; series: Record<string, number[]>; queue: Json; tls: Json; topDomains: unknown[]; topBounceClasses: unknown[]; inbound: Record<string, Json>; inboundSince: number };
    assert.equal(o.range, 'hour');
    assert.equal(o.buckets.length, 60);
    assert.ok(o.buckets.every((b, i) => i === 0 || b - o.buckets[i - 1]! === 60_000));
    assert.ok(o.buckets.at(-1)! <= Date.now() && Date.now() - o.buckets.at(-1)! < 60_000);
    assert.deepEqual(Object.keys(o.series).sort(), ['bounced', 'deferred', 'delivered', 'received']);
    assert.ok(Object.values(o.series).every((s) => s.length === 60));
    assert.deepEqual(Object.keys(o.queue).sort(), ['active', 'deferred', 'held', 'queued', 'total']);
    assert.deepEqual(Object.keys(o.tls).sort(), ['tls', 'total']);
    assert.deepEqual(Object.keys(o.inbound).sort(), ['dkim', 'dmarc', 'spf']);
    assert.ok(o.inboundSince <= Date.now());
    for (const range of ['day', 'month']) {
      const r = await json<{ buckets: number[] }>(await call(`/ui/api/overview?range=${range}`));
      assert.equal(r.buckets.length, range === 'day' ? 24 : 30);
    }
    await expectProblem(await call('/ui/api/overview?range=year'), 400, '/query/range');

    // The live stream: a first update at once, then one after the send.
    const abort = new AbortController();
    const res = await call('/ui/api/live', { signal: abort.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    const nextUpdate = async (): Promise<{ at: number; minute: Record<string, number>; queue: Json }> => {
      for (;;) {
        const m = /event: update\ndata: (.*)\n\n/.exec(buffered);
        if (m) {
          buffered = buffered.slice(m.index + m[0].length);
          return JSON.parse(m[1]!) as { at: number; minute: Record<string, number>; queue: Json };
        }
        // Bounded: a stream that stops sending fails here, with its reason, instead of at the test's timeout.
        let timer: NodeJS.Timeout | undefined;
        const { value, done } = await Promise.race([
          reader.read(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no live update for 15 s; last data: ${JSON.stringify(buffered.slice(-300))}`)), 15_000);
          }),
        ]).finally(() => clearTimeout(timer));
        assert.ok(!done, 'the stream ended');
        buffered += decoder.decode(value, { stream: true });
      }
    };
    try {
      const first = await nextUpdate();
      assert.ok(Math.abs(first.at - Date.now()) < 5000);
      assert.deepEqual(Object.keys(first.minute).sort(), ['bounced', 'deferred', 'delivered', 'received']);
      assert.ok('total' in first.queue);
      const id = await smtpSend(['bob@tern.test'], 'Dashboard live check', '<live-1@client.test>');
      // Figures of the current minute move (a minute boundary between the two reads restarts them: then any count ≥ 1 will do).
      const moved = await waitFor(async () => {
        const u = await nextUpdate();
        return u.minute.delivered >= 1 && (u.minute.received > first.minute.received || u.minute.received >= 1) ? u : null;
      }, 10_000, 'a live update with the delivery');
      assert.ok(moved!.at - first.at >= 1000 - 50, 'at most one update per second');
      const after = await waitFor(async () => {
        const t = await overviewTotals();
        return t.received > before.received && t.delivered > before.delivered ? t : null;
      }, 10_000, 'the overview to count the message');
      assert.equal(after!.received, before.received + 1);
      assert.ok(id);
    } finally {
      abort.abort();
      await reader.cancel().catch(() => {});
    }
  });

  let deferredId = '';
  it('the queue: a deferred message is listed, filtered, retried, held, released and deleted', async () => {
    deferredId = await smtpSend(['pat@later.test'], 'Quarterly numbers', '<deferred-1@client.test>');
    type Listed = { messages: { id: string; state: string; attempts: number; recipients: { address: string; status: string; lastReply: { code: number } | null }[] }[]; total: number };
    const listed = await waitFor(async () => {
      const q = await json<Listed>(await call('/ui/api/queue?state=deferred'));
      return q.messages.find((m) => m.id === deferredId && m.attempts >= 1) ?? null;
    }, 15_000, 'a first failed attempt');
    // Exactly what `tern queue list --json` gives per message.
    assert.ok(listed);
    assert.deepEqual(Object.keys(listed), ['id', 'from', 'recipients', 'size', 'createdAt', 'state', 'attempts', 'nextAttempt']);
    assert.deepEqual([listed.recipients[0]!.address, listed.recipients[0]!.status, listed.recipients[0]!.lastReply?.code], ['pat@later.test', 'deferred', 451]);
    assert.ok((await json<Listed>(await call('/ui/api/queue?domain=later.test'))).messages.some((m) => m.id === deferredId));
    assert.deepEqual((await json<Listed>(await call('/ui/api/queue?domain=elsewhere.test'))).messages, []);
    assert.deepEqual((await json<Listed>(await call('/ui/api/queue?state=held'))).messages, []);
    const one = await json<Listed & { more: boolean }>(await call('/ui/api/queue?limit=1'));
    assert.equal(one.messages.length, 1);
    assert.ok(one.total >= 1);
    await expectProblem(await call('/ui/api/queue?limit=1001'), 400, '/query/limit');
    await expectProblem(await call('/ui/api/queue?state=lost'), 400, '/query/state');

    // The message page: its events, its queue entry, its header section while it is still spooled.
    const page = await json<{ id: string; subject: string; messageId: string; from: string; events: { type: string; data: { reply: { code: number } | null } }[]; queue: { state: string } | null; headers: string | null }>(
      await call(`/ui/api/messages/${deferredId}`),
    );
    assert.deepEqual([page.id, page.subject, page.messageId, page.from], [deferredId, 'Quarterly numbers', '<deferred-1@client.test>', 'alice@tern.test']);
    assert.deepEqual(page.events.map((e) => e.type).slice(0, 2), ['queued', 'deferred']);
    assert.equal(page.events[1]!.data.reply?.code, 451);
    assert.equal(page.queue?.state, 'deferred');
    assert.match(page.headers ?? '', /^Received: from client\.test /m);
    assert.match(page.headers ?? '', /\r\nSubject: Quarterly numbers\r\n/);
    assert.doesNotMatch(page.headers ?? '', /Hello\./, 'the header section only');

    // Retry: another attempt now (the schedule said in an hour).
    assert.deepEqual(await json(await change('POST', `/ui/api/queue/${deferredId}/retry`)), { ok: true });
    await waitFor(async () => {
      const q = await json<Listed>(await call('/ui/api/queue'));
      return q.messages.find((m) => m.id === deferredId && m.attempts >= 2 && m.state === 'deferred') ?? null;
    }, 15_000, 'the retried attempt');

    assert.deepEqual(await json(await change('POST', `/ui/api/queue/${deferredId}/hold`)), { ok: true });
    assert.deepEqual((await json<Listed>(await call('/ui/api/queue?state=held'))).messages.map((m) => m.id), [deferredId]);
    const overview = await json<{ queue: { held: number } }>(await call('/ui/api/overview'));
    assert.equal(overview.queue.held, 1);
    await expectProblem(await change('POST', `/ui/api/queue/${deferredId}/retry`), 409);
    assert.deepEqual(await json(await change('POST', `/ui/api/queue/${deferredId}/release`)), { ok: true });
    assert.deepEqual((await json<Listed>(await call('/ui/api/queue?state=held'))).messages, []);
    assert.deepEqual(await json(await change('POST', `/ui/api/queue/${deferredId}/delete`)), { ok: true });
    await waitFor(async () => !(await json<Listed>(await call('/ui/api/queue'))).messages.some((m) => m.id === deferredId), 10_000, 'the message gone');
    for (const action of ['retry', 'hold', 'release', 'delete']) await expectProblem(await change('POST', `/ui/api/queue/${deferredId}/${action}`), 404);
    await expectProblem(await change('POST', '/ui/api/queue/bad$id/retry'), 400, '/params/id');
    // Gone from the queue, still in the events: no headers, no queue entry.
    const gone = await json<{ queue: unknown; headers: unknown; events: unknown[] }>(await call(`/ui/api/messages/${deferredId}`));
    assert.deepEqual([gone.queue, gone.headers], [null, null]);
    assert.ok(gone.events.length >= 3);
    await expectProblem(await call('/ui/api/messages/0NOSUCHMESSAGE00'), 404);
  });

  it('finds messages by address, Message-ID (with or without <>), queue id, subject and date', async () => {
    type Page = { messages: { id: string; from: string; subject: string; messageId: string; createdAt: string; recipients: { address: string; status: string }[] }[]; next: string | null };
    const ids = (p: Page) => p.messages.map((m) => m.id);
    const bySender = await json<Page>(await call('/ui/api/messages?q=ALICE@tern.test'));
    assert.ok(bySender.messages.length >= 2);
    assert.ok(bySender.messages.every((m) => m.from === 'alice@tern.test'));
    assert.ok(ids(bySender).includes(deferredId));
    // Newest first.
    assert.deepEqual(ids(bySender), [...ids(bySender)].sort().reverse());
    const byRecipient = await json<Page>(await call('/ui/api/messages?q=pat@later.test'));
    assert.deepEqual(ids(byRecipient), [deferredId]);
    assert.deepEqual(byRecipient.messages[0]!.recipients.map((r) => r.address), ['pat@later.test']);
    for (const q of ['<deferred-1@client.test>', 'deferred-1@client.test']) assert.deepEqual(ids(await json<Page>(await call(`/ui/api/messages?q=${encodeURIComponent(q)}`))), [deferredId], q);
    assert.deepEqual(ids(await json<Page>(await call(`/ui/api/messages?q=${deferredId}`))), [deferredId]);
    const bySubject = await json<Page>(await call('/ui/api/messages?q=quarterly'));
    assert.deepEqual(ids(bySubject), [deferredId]);
    assert.equal(bySubject.messages[0]!.subject, 'Quarterly numbers');
    const live = await json<Page>(await call('/ui/api/messages?q=live%20check'));
    assert.equal(live.messages.length, 1);
    assert.deepEqual(live.messages[0]!.recipients, [{ address: 'bob@tern.test', status: 'delivered' }]);
    assert.deepEqual(ids(await json<Page>(await call('/ui/api/messages?q=no%20such%20words'))), []);
    const later = new Date(Date.now() + 3_600_000).toISOString();
    assert.deepEqual(ids(await json<Page>(await call(`/ui/api/messages?since=${later}`))), []);
    const all = await json<Page>(await call(`/ui/api/messages?until=${later}&limit=1`));
    assert.equal(all.messages.length, 1);
    assert.equal(all.next, all.messages[0]!.id);
    const second = await json<Page>(await call(`/ui/api/messages?until=${later}&limit=1&before=${all.next}`));
    assert.ok(second.messages[0]!.id < all.next!);
    await expectProblem(await call('/ui/api/messages?since=yesterday'), 400, '/query/since');
    await expectProblem(await call('/ui/api/messages?limit=0'), 400, '/query/limit');
  });

  it('suppressions, webhooks and users through the session', async () => {
    // Suppressions: the API's routes, behind the session.
    const put = await json<{ address: string; source: string }>(await change('PUT', '/ui/api/suppressions/Someone@Example.org', { reason: 'asked by phone' }), 201);
    assert.deepEqual([put.address, put.source], ['someone@example.org', 'api']);
    await expectProblem(await change('PUT', '/ui/api/suppressions/someone@example.org', { reason: '' }), 400, '/body/reason');
    const list = await json<{ suppressions: { address: string }[] }>(await call('/ui/api/suppressions?limit=10'));
    assert.deepEqual(list.suppressions.map((s) => s.address), ['someone@example.org']);
    assert.equal((await change('DELETE', '/ui/api/suppressions/someone@example.org')).status, 200);
    await expectProblem(await change('DELETE', '/ui/api/suppressions/someone@example.org'), 404);

    // Webhooks: every key's, as the API lists them, with the owner's name; deleted from here.
    const key = await json<{ key: string }>(await change('POST', '/ui/api/keys', { name: 'hooks', sendAs: ['@tern.test'] }), 201);
    const hook = await json<{ id: string }>(
      await fetch(`${base}/v1/webhooks`, { method: 'POST', headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' }, body: JSON.stringify({ url: 'http://127.0.0.1:9/hook' }) }),
      201,
    );
    const hooks = await json<{ webhooks: { id: string; owner: string; url: string; deliveries: unknown[] }[] }>(await call('/ui/api/webhooks'));
    assert.deepEqual(hooks.webhooks.map((w) => [w.id, w.owner, w.url]), [[hook.id, 'hooks', 'http://127.0.0.1:9/hook']]);
    assert.ok(Array.isArray(hooks.webhooks[0]!.deliveries));
    assert.ok(!JSON.stringify(hooks).includes('whsec_'), 'never the secret');
    assert.equal((await change('DELETE', `/ui/api/webhooks/${hook.id}`)).status, 204);
    await expectProblem(await change('DELETE', `/ui/api/webhooks/${hook.id}`), 404);

    // Users: listed with admin; added (password rules as `tern user add`); deleted, but not oneself.
    const users = await json<{ users: { address: string; admin: boolean; sendAs: string[]; createdAt: string }[] }>(await call('/ui/api/users'));
    assert.deepEqual(users.users.map((u) => [u.address, u.admin]), [['bob@tern.test', false], ['root@tern.test', true]]);
    await expectProblem(await change('POST', '/ui/api/users', { address: 'carol@tern.test', password: 'short', admin: false }), 400, '/body/password');
    await expectProblem(await change('POST', '/ui/api/users', { address: 'not an address', password: 'long enough password' }), 400, '/body/address');
    await expectProblem(await change('POST', '/ui/api/users', { address: 'carol@tern.test', password: 'long enough password', sendAs: ['@bad..domain'] }), 400, '/body/sendAs/0');
    const made = await json<{ address: string; admin: boolean; sendAs: string[] }>(
      await change('POST', '/ui/api/users', { address: 'Carol@tern.test', password: 'long enough password', admin: true, sendAs: ['@catch.test'] }),
      201,
    );
    assert.deepEqual(made, { ...made, address: 'carol@tern.test', admin: true, sendAs: ['@catch.test'] });
    await expectProblem(await change('POST', '/ui/api/users', { address: 'carol@tern.test', password: 'long enough password' }), 409);
    // The new admin can log in (and is then deleted, which ends that session at once).
    const carol = await login('carol@tern.test', 'long enough password');
    assert.equal(carol.status, 200);
    const carolCookie = carol.headers.getSetCookie()[0]!.split(';')[0]!;
    assert.equal((await fetch(`${base}/ui/api/session`, { headers: { cookie: carolCookie } })).status, 200);
    await expectProblem(await change('DELETE', `/ui/api/users/${ADMIN.address}`), 409);
    assert.equal((await change('DELETE', '/ui/api/users/carol@tern.test')).status, 204);
    await expectProblem(await change('DELETE', '/ui/api/users/carol@tern.test'), 404);
    await expectProblem(await fetch(`${base}/ui/api/session`, { headers: { cookie: carolCookie } }), 401);
  });

  /** Opens the live stream with `cookieValue`; `ended` resolves when the server ends it. */
  async function openLive(cookieValue: string): Promise<{ ended: Promise<string>; abort: () => void }> {
    const abort = new AbortController();
    const res = await fetch(`${base}/ui/api/live`, { headers: { cookie: cookieValue }, signal: abort.signal });
    assert.equal(res.status, 200);
    const ended = (async () => {
      let text = '';
      const reader = res.body!.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return text;
        text += new TextDecoder().decode(value);
      }
    })();
    return { ended, abort: () => abort.abort() };
  }

  it('logout deletes the session: the cookie is cleared and no longer works, its live stream ends', async () => {
    const old = cookie;
    const stream = await openLive(old);
    const res = await change('POST', '/ui/logout');
    assert.equal(res.status, 204);
    assert.match(res.headers.getSetCookie()[0] ?? '', /^tern_session=; .*Max-Age=0/);
    await expectProblem(await fetch(`${base}/ui/api/session`, { headers: { cookie: old } }), 401);
    await expectProblem(await fetch(`${base}/ui/api/overview`, { headers: { cookie: old } }), 401);
    assert.match(await stream.ended, /event: update/, 'the stream ended at logout, after its first update');
    cookie = '';
  });

  // Last: it locks 127.0.0.1 out of logging in (and out of SMTP AUTH: the throttle is shared).
  it('refuses non-admins and wrong passwords alike (401), then throttles (429)', async () => {
    // Failed dashboard logins are counted with SMTP AUTH's (tern_auth_failures_total, process-wide).
    const authFailures = async (): Promise<number> => Number(/^tern_auth_failures_total (\d+)$/m.exec(await (await fetch(`${base}/metrics`)).text())?.[1] ?? NaN);
    const failuresBefore = await authFailures();
    // In parallel: each is checked before the others count, so none waits for the throttle's delay.
    const refused = await Promise.all([
      login(PLAIN_USER.address, PLAIN_USER.password), // a right password, but no admin
      login(ALICE.user, ALICE.password), // a config-file user: never an admin
      login(ADMIN.address, 'wrong password'),
      login('nobody@tern.test', 'whatever'),
    ]);
    const details = new Set<string>();
    for (const res of refused) {
      details.add((await expectProblem(res, 401)).detail);
      assert.deepEqual(res.headers.getSetCookie(), []);
    }
    assert.equal(details.size, 1, 'one answer for every refusal');
    assert.ok((await authFailures()) >= failuresBefore + 4, 'the four refusals are counted');
    // Guesses in parallel see each other (each counts before it is checked): after the lockout, even the right password gets 429.
    // (Distinct guesses: identical attempts in flight share one check and count once, src/policy/verified-logins.ts.)
    const burst = await Promise.all(Array.from({ length: 10 }, (_, i) => login(ADMIN.address, `still wrong ${i}`)));
    assert.ok(burst.every((r) => r.status === 401 || r.status === 429), burst.map((r) => r.status).join());
    await expectProblem(await login(ADMIN.address, ADMIN.password), 429);
  });

  it('stops without waiting for open live streams', async () => {
    // Logins from here are locked out (above): a session written to the store directly, as a login writes it.
    const store = openStore(cfg.dataDir);
    const token = 'stop-test-token-0123456789abcdefghijklmnopq';
    store.dashboard.addSession({ tokenHash: tokenHash(token), csrf: 'x', user: ADMIN.address, createdAt: Date.now(), expiresAt: Date.now() + 60_000 });
    store.close();
    const streams = await Promise.all([openLive(`tern_session=${token}`), openLive(`tern_session=${token}`)]);
    const started = Date.now();
    await tern.stop(5000);
    assert.ok(Date.now() - started < 3000, `stop took ${Date.now() - started} ms`);
    for (const s of streams) await s.ended;
  });
});
