// Webhooks end to end (issue 13, item 6): a real Tern with an http listener,
// keys made by the real `tern apikey` code, real HTTP receivers on
// 127.0.0.1. Every delivery is checked with the standardwebhooks package,
// an implementation that shares no code with ours. Receivers fail, time out
// and answer 410; filters and key scopes decide who gets what; mail from
// SMTP is announced like the API's; and a kill -9 while deliveries are
// pending loses none of them.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { Webhook } from 'standardwebhooks';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import type { MessageEvent } from '../../src/events/events.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { RawClient, freePort, spawnServer, waitFor, writeConfig } from '../helpers/server.ts';
import { createKey } from '../helpers/apikey.ts';

const LISTENERS = [
  { role: 'smtp', address: '127.0.0.1', port: 0 },
  { role: 'http', address: '127.0.0.1', port: 0 },
];


interface Hit {
  id: string;
  headers: Record<string, string>;
  body: string;
  payload: { type: string; timestamp: string; data: MessageEvent };
  at: number;
}

interface Receiver {
  url: string;
  port: number;
  hits: Hit[];
  /** Hits of one message (by queue id). */
  of(queueId: string): Hit[];
  close(): Promise<void>;
}

/**
 * A webhook endpoint. `answer` gives the status for each POST (or 'hang':
 * never answer); `secret()` is read at each POST, and every POST must verify
 * against it (a failure is recorded and fails the test).
 */
async function receiver(answer: (hit: Hit, n: number) => number | 'hang', secret: () => string | undefined, port = 0): Promise<Receiver> {
  const hits: Hit[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = req.headers as Record<string, string>;
      const s = secret();
      let payload: Hit['payload'];
      try {
        // The independent verifier: HMAC, timestamp tolerance, header names.
        payload = new Webhook(s ?? 'whsec_unset').verify(body, headers) as Hit['payload'];
      } catch (e) {
        verifyFailures.push(`${req.url}: ${(e as Error).message}`);
        res.writeHead(400).end();
        return;
      }
      const hit = { id: headers['webhook-id']!, headers, body, payload, at: Date.now() };
      hits.push(hit);
      const a = answer(hit, hits.filter((h) => h.id === hit.id).length);
      if (a !== 'hang') res.writeHead(a).end();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const bound = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${bound}/hooks/tern`,
    port: bound,
    hits,
    of: (queueId) => hits.filter((h) => h.payload.data.queueId === queueId),
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Signature checks that failed anywhere: must stay empty. */
const verifyFailures: string[] = [];

interface WebhookView {
  id: string;
  url: string;
  events: string[] | null;
  createdAt: string;
  owner: string | null;
  state: 'enabled' | 'disabled';
  disabledAt: string | null;
  disabledReason: string | null;
  pending: number;
  deliveries: { eventId: string; attempt: number; at: string; status: number | null; error: string | null; durationMs: number; outcome: string }[];
}

describe('webhooks', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let dns: DnsServer;
  let base: string;
  let alice: string;
  let carol: string;
  let admin: string;
  const secrets = new Map<string, string>();

  before(async () => {
    dns = await startDnsServer({});
    cfg = writeConfig({
      listeners: LISTENERS,
      trustedNetworks: ['127.0.0.0/8'],
      dns: { servers: [dns.address], timeout: '2s' },
      webhooks: { timeout: '400ms', retryFor: '1h', concurrency: 8 },
    });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false, webhookRetrySchedule: [150, 300] });
    base = `http://127.0.0.1:${tern.ports.find((p) => p.role === 'http')!.port}`;
    alice = createKey(cfg.file, 'alice-app', '--send-as', 'alice@tern.test');
    carol = createKey(cfg.file, 'carol-app', '--send-as', '@catch.test');
    admin = createKey(cfg.file, 'ops', '--admin');
  });

  after(async () => {
    await tern?.stop(500);
    await dns?.close();
    fs.rmSync(cfg.dir, { recursive: true, force: true });
    assert.deepEqual(verifyFailures, [], 'every POST verified');
  });

  const api = (path: string, key: string, init: RequestInit = {}) =>
    fetch(base + path, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers } });

  async function register(key: string, url: string, events?: string[]): Promise<{ id: string; secret: string }> {
    const res = await api('/v1/webhooks', key, { method: 'POST', body: JSON.stringify({ url, ...(events ? { events } : {}) }) });
    assert.equal(res.status, 201, await res.clone().text());
    const w = (await res.json()) as { id: string; secret: string };
    secrets.set(new URL(url).port, w.secret);
    return w;
  }
  const secretFor = (r: () => Receiver | undefined) => () => secrets.get(String(r()?.port));

  async function listed(key: string): Promise<WebhookView[]> {
    const res = await api('/v1/webhooks', key);
    assert.equal(res.status, 200);
    return ((await res.json()) as { webhooks: WebhookView[] }).webhooks;
  }

  async function send(key: string, from: string, to: string): Promise<string> {
    const res = await api('/v1/messages', key, { method: 'POST', body: JSON.stringify({ from, to: [to], subject: 'hooks', text: 'Hello.' }) });
    assert.equal(res.status, 202, await res.clone().text());
    return ((await res.json()) as { id: string }).id;
  }

  async function eventsOf(key: string, queueId: string): Promise<MessageEvent[]> {
    const res = await api(`/v1/messages/${queueId}`, key);
    assert.equal(res.status, 200);
    return ((await res.json()) as { events: MessageEvent[] }).events;
  }

  it('manages webhooks: 201 with the secret once, strict validation, own list, 404 for another key\'s, admin sees all', async () => {
    const bad = async (body: unknown, path: string) => {
      const res = await api('/v1/webhooks', alice, { method: 'POST', body: JSON.stringify(body) });
      assert.equal(res.status, 400);
      assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
      const p = (await res.json()) as { errors?: { path: string }[] };
      assert.ok(p.errors?.some((e) => e.path === path), `${path} in ${JSON.stringify(p)}`);
    };
    await bad({ url: 'ftp://127.0.0.1/x' }, '/body/url');
    await bad({ url: '/relative' }, '/body/url');
    await bad({ url: 'http://127.0.0.1/x', events: ['opened'] }, '/body/events/0');
    await bad({ url: 'http://127.0.0.1/x', events: [] }, '/body/events');
    await bad({ url: 'http://127.0.0.1/x', evnts: ['queued'] }, '/body/evnts');
    await bad({}, '/body/url');

    const res = await api('/v1/webhooks', alice, { method: 'POST', body: JSON.stringify({ url: 'http://127.0.0.1:9/a', events: ['bounced', 'delivered'] }) });
    assert.equal(res.status, 201);
    const created = (await res.json()) as { id: string; url: string; events: string[]; secret: string; createdAt: string };
    assert.deepEqual(Object.keys(created).sort(), ['createdAt', 'events', 'id', 'secret', 'url']);
    assert.match(created.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
    assert.deepEqual(created.events, ['bounced', 'delivered']);
    assert.ok(Date.parse(created.createdAt) > Date.now() - 60_000);

    const mine = await listed(alice);
    const w = mine.find((x) => x.id === created.id)!;
    assert.ok(w);
    assert.equal(JSON.stringify(mine).includes('whsec_'), false, 'the secret is never listed');
    assert.deepEqual([w.url, w.state, w.owner, w.pending, w.deliveries], ['http://127.0.0.1:9/a', 'enabled', 'alice-app', 0, []]);
    assert.equal((await listed(carol)).some((x) => x.id === created.id), false);
    assert.ok((await listed(admin)).some((x) => x.id === created.id && x.owner === 'alice-app'));

    assert.equal((await api(`/v1/webhooks/${created.id}`, carol, { method: 'DELETE' })).status, 404);
    assert.equal((await api(`/v1/webhooks/${created.id}`, alice, { method: 'DELETE' })).status, 204);
    assert.equal((await api(`/v1/webhooks/${created.id}`, alice, { method: 'DELETE' })).status, 404);
    assert.equal((await listed(alice)).some((x) => x.id === created.id), false);

    const doc = (await (await fetch(`${base}/v1/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    assert.deepEqual(Object.keys(doc.paths['/v1/webhooks']!).sort(), ['get', 'post']);
    assert.deepEqual(Object.keys(doc.paths['/v1/webhooks/{id}']!), ['delete']);
  });

  it('POSTs every event, verified by standardwebhooks, with webhook-id = the event id and data = the event as GET /v1/events shows it', async () => {
    let rx: Receiver | undefined;
    rx = await receiver(() => 204, secretFor(() => rx));
    try {
      const w = await register(alice, rx.url);
      const id = await send(alice, 'alice@tern.test', 'bob@tern.test');
      await waitFor(() => rx!.of(id).length >= 2, 10_000, 'queued and delivered');
      const stored = await eventsOf(alice, id);
      assert.deepEqual(stored.map((e) => e.type), ['queued', 'delivered']);
      for (const e of stored) {
        const hit: Hit | undefined = rx.hits.find((h) => h.id === e.id);
        assert.ok(hit, `event ${e.id} was POSTed`);
        assert.equal(hit.payload.type, e.type);
        assert.equal(hit.payload.timestamp, e.timestamp);
        assert.deepEqual(hit.payload.data, e);
        assert.equal(hit.headers['content-type'], 'application/json');
        assert.match(hit.headers['user-agent']!, /^Tern\//);
        assert.match(hit.headers['webhook-signature']!, /^v1,[A-Za-z0-9+/]+=*$/);
      }
      const view = (await listed(alice)).find((x) => x.id === w.id)!;
      assert.deepEqual(view.deliveries.filter((d) => stored.some((e) => e.id === d.eventId)).map((d) => [d.outcome, d.status, d.attempt]), [['delivered', 204, 1], ['delivered', 204, 1]]);
      assert.equal((await api(`/v1/webhooks/${w.id}`, alice, { method: 'DELETE' })).status, 204);
    } finally {
      await rx.close();
    }
  });

  it('retries a 500 with the same webhook-id and identical bytes until it is accepted', async () => {
    let rx: Receiver | undefined;
    rx = await receiver((_hit, n) => (n <= 2 ? 500 : 200), secretFor(() => rx));
    try {
      const w = await register(alice, rx.url, ['queued']);
      const id = await send(alice, 'alice@tern.test', 'bob@tern.test');
      await waitFor(() => rx!.of(id).length >= 3, 10_000, 'the third attempt');
      const hits = rx.of(id);
      assert.equal(new Set(hits.map((h) => h.id)).size, 1);
      assert.equal(new Set(hits.map((h) => h.body)).size, 1, 'the same bytes every time');
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(rx.of(id).length, 3, 'nothing after the 200');
      const view = (await listed(alice)).find((x) => x.id === w.id)!;
      assert.deepEqual(view.deliveries.slice(0, 3).map((d) => [d.attempt, d.status, d.outcome]), [[3, 200, 'delivered'], [2, 500, 'retrying'], [1, 500, 'retrying']]);
      await api(`/v1/webhooks/${w.id}`, alice, { method: 'DELETE' });
    } finally {
      await rx.close();
    }
  });

  it('retries an attempt that gets no answer within webhooks.timeout', async () => {
    let rx: Receiver | undefined;
    rx = await receiver((_hit, n) => (n === 1 ? 'hang' : 204), secretFor(() => rx));
    try {
      const w = await register(alice, rx.url, ['queued']);
      const id = await send(alice, 'alice@tern.test', 'bob@tern.test');
      await waitFor(() => rx!.of(id).length >= 2, 10_000, 'the retry');
      const [first, second] = rx.of(id);
      assert.equal(first!.id, second!.id);
      assert.ok(second!.at - first!.at >= 400, 'not before the timeout');
      const view = (await waitFor(async () => (await listed(alice)).find((x) => x.id === w.id && x.deliveries[0]?.outcome === 'delivered'), 5000, 'the delivery record'))!;
      const timedOut = view.deliveries[1]!;
      assert.deepEqual([timedOut.status, timedOut.outcome], [null, 'retrying']);
      assert.match(timedOut.error!, /timed out/);
      await api(`/v1/webhooks/${w.id}`, alice, { method: 'DELETE' });
    } finally {
      await rx.close();
    }
  });

  it('disables a webhook whose endpoint answers 410: no further POSTs, listed as disabled with the reason', async () => {
    let rx: Receiver | undefined;
    rx = await receiver(() => 410, secretFor(() => rx));
    try {
      const w = await register(alice, rx.url, ['queued']);
      await send(alice, 'alice@tern.test', 'bob@tern.test');
      const view = (await waitFor(async () => (await listed(alice)).find((x) => x.id === w.id && x.state === 'disabled'), 10_000, 'disabled'))!;
      assert.match(view.disabledReason!, /410/);
      assert.ok(view.disabledAt);
      assert.equal(view.deliveries[0]!.outcome, 'disabled');
      const count = rx.hits.length;
      assert.equal(count, 1);
      await send(alice, 'alice@tern.test', 'bob@tern.test');
      await new Promise((r) => setTimeout(r, 800));
      assert.equal(rx.hits.length, count);
      assert.equal((await listed(alice)).find((x) => x.id === w.id)!.pending, 0);
      await api(`/v1/webhooks/${w.id}`, alice, { method: 'DELETE' });
    } finally {
      await rx.close();
    }
  });

  it('sends a webhook only the types it asked for (bounced), and each key only its own mail; an admin key\'s gets all', async () => {
    let bounces: Receiver | undefined;
    let everything: Receiver | undefined;
    let carols: Receiver | undefined;
    let ops: Receiver | undefined;
    bounces = await receiver(() => 200, secretFor(() => bounces));
    everything = await receiver(() => 200, secretFor(() => everything));
    carols = await receiver(() => 200, secretFor(() => carols));
    ops = await receiver(() => 200, secretFor(() => ops));
    try {
      const hooks = [
        await register(alice, bounces.url, ['bounced']),
        await register(alice, everything.url),
        await register(carol, carols.url),
        await register(admin, ops.url),
      ];
      // nowhere.test does not exist (NXDOMAIN from the test DNS server): 5.1.2, a bounce, and a DSN to alice.
      const bounced = await send(alice, 'alice@tern.test', 'someone@nowhere.test');
      const delivered = await send(alice, 'alice@tern.test', 'bob@tern.test');
      const fromCarol = await send(carol, 'carol@catch.test', 'bob@tern.test');
      await waitFor(() => bounces!.of(bounced).length >= 1 && everything!.of(delivered).length >= 2 && carols!.of(fromCarol).length >= 2, 10_000, 'deliveries');
      await waitFor(() => ops!.of(bounced).length + ops!.of(delivered).length + ops!.of(fromCarol).length >= 6, 10_000, 'the admin webhook');
      await new Promise((r) => setTimeout(r, 500));

      assert.deepEqual(bounces.hits.map((h) => [h.payload.type, h.payload.data.queueId]), [['bounced', bounced]]);
      assert.equal(bounces.hits[0]!.payload.data.data.reply?.enhanced, '5.1.2');
      // POSTs run in parallel: the order of arrival is not the events' (their ids and timestamps are).
      assert.deepEqual(everything.of(bounced).map((h) => h.payload.type).sort(), ['bounced', 'queued']);
      assert.deepEqual(everything.of(delivered).map((h) => h.payload.type).sort(), ['delivered', 'queued']);
      // Scopes: alice's webhooks never see carol's mail, and carol's never alice's (nor the DSN to her, from the null sender).
      assert.deepEqual(everything.of(fromCarol), []);
      assert.deepEqual(carols.hits.map((h) => h.payload.data.queueId), [fromCarol, fromCarol]);
      const adminQueues = new Set(ops.hits.map((h) => h.payload.data.queueId));
      assert.ok([bounced, delivered, fromCarol].every((q) => adminQueues.has(q)));
      // The DSN for the bounce is mail from <>: only the admin key may read it.
      await waitFor(() => ops!.hits.some((h) => h.payload.data.data.source === 'bounce'), 10_000, 'the DSN\'s events');
      assert.equal(everything.hits.some((h) => h.payload.data.data.source === 'bounce'), false);
      for (const h of hooks) await api(`/v1/webhooks/${h.id}`, h === hooks[2] ? carol : h === hooks[3] ? admin : alice, { method: 'DELETE' });
    } finally {
      await Promise.all([bounces, everything, carols, ops].map((r) => r.close()));
    }
  });

  it('announces mail that came over SMTP, not only the API\'s', async () => {
    let rx: Receiver | undefined;
    rx = await receiver(() => 204, secretFor(() => rx));
    try {
      const w = await register(alice, rx.url);
      const c = await RawClient.connect(tern.ports.find((p) => p.role === 'smtp')!.port);
      await c.reply();
      await c.cmd('EHLO client.test');
      assert.match(await c.cmd('MAIL FROM:<alice@tern.test>'), /^250/);
      assert.match(await c.cmd('RCPT TO:<bob@tern.test>'), /^250/);
      assert.match(await c.cmd('DATA'), /^354/);
      const reply = await c.cmd('From: alice@tern.test\r\nTo: bob@tern.test\r\nSubject: over smtp\r\n\r\nbody\r\n.');
      await c.cmd('QUIT');
      c.close();
      const id = /queued as (\w+)/.exec(reply)![1]!;
      await waitFor(() => rx!.of(id).length >= 2, 10_000, 'the SMTP message\'s events');
      assert.deepEqual(rx.of(id).map((h) => `${h.payload.type}/${h.payload.data.data.source}`).sort(), ['delivered/smtp', 'queued/smtp']);
      await api(`/v1/webhooks/${w.id}`, alice, { method: 'DELETE' });
    } finally {
      await rx.close();
    }
  });
});

describe('webhooks across kill -9', () => {
  it('sends every stored event after a restart, with the same webhook-id, when the server died with deliveries pending', { timeout: 40_000 }, async () => {
    const port = await freePort();
    const cfg = writeConfig({
      listeners: LISTENERS,
      trustedNetworks: ['127.0.0.0/8'],
      // Attempts hang until the kill: each event is claimed, in flight or waiting in memory, when the process dies.
      webhooks: { timeout: '30s', concurrency: 4 },
    });
    let secret: string | undefined;
    let child = await spawnServer(cfg.file);
    const hung = await receiver(() => 'hang', () => secret, port);
    let up: Receiver | undefined;
    try {
      const key = createKey(cfg.file, 'alice-app', '--send-as', 'alice@tern.test');
      const base = `http://127.0.0.1:${child.ports.http}`;
      const call = (b: string, path: string, init: RequestInit = {}) =>
        fetch(b + path, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.body ? { 'content-type': 'application/json' } : {}) } });
      const res = await call(base, '/v1/webhooks', { method: 'POST', body: JSON.stringify({ url: `http://127.0.0.1:${port}/hook` }) });
      assert.equal(res.status, 201);
      secret = ((await res.json()) as { secret: string }).secret;
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await call(base, '/v1/messages', { method: 'POST', body: JSON.stringify({ from: 'alice@tern.test', to: ['bob@tern.test'], subject: `m${i}`, text: 'x' }) });
        assert.equal(r.status, 202);
        ids.push(((await r.json()) as { id: string }).id);
      }
      // Every message delivered and its events stored; four POSTs hanging (the concurrency), the rest claimed behind them.
      const stored = (await waitFor(async () => {
        const evs = ((await (await call(base, '/v1/events?limit=1000')).json()) as { events: MessageEvent[] }).events;
        return evs.filter((e) => e.type === 'delivered').length === ids.length ? evs : null;
      }, 15_000, 'every event stored'))!;
      await waitFor(() => hung.hits.length >= 4, 10_000, 'POSTs in flight');
      const before = new Map(hung.hits.map((h) => [h.id, h.body]));

      child.child.kill('SIGKILL');
      await new Promise((r) => (child.child.exitCode !== null || child.child.signalCode ? r(null) : child.child.once('exit', r)));
      await hung.close();
      up = await receiver(() => 204, () => secret, port);

      child = await spawnServer(cfg.file);
      await waitFor(() => stored.every((e) => up!.hits.some((h) => h.id === e.id)), 15_000, 'every stored event delivered after the restart');
      for (const e of stored) {
        const hit: Hit = up.hits.find((h) => h.id === e.id)!;
        assert.deepEqual(hit.payload.data, e);
      }
      // What was in flight at the kill comes again: the same id, the same bytes.
      for (const [id, body] of before) assert.equal(up.hits.find((h) => h.id === id)?.body, body, `event ${id} re-sent as it was`);
      assert.deepEqual(verifyFailures, []);
    } finally {
      child.child.kill('SIGTERM');
      await new Promise((r) => (child.child.exitCode !== null || child.child.signalCode ? r(null) : child.child.once('exit', r)));
      await hung.close().catch(() => {});
      await up?.close();
      fs.rmSync(cfg.dir, { recursive: true, force: true });
    }
  });
});

describe('webhooks and events.retention', () => {
  // A retried event is read back from the events store: a retention shorter than the retries loses some, so the server says so at start.
  for (const [retention, warned] of [['1d', true], ['30d', false]] as const) {
    it(`events.retention ${retention} against webhooks.retryFor 3d: ${warned ? 'a warning' : 'no warning'} at start`, async () => {
      const warnings: string[] = [];
      const { file } = writeConfig({ events: { retention } });
      const tern = await startTern(loadConfig(file), { log: { ...silentLogger, warn: (msg) => void warnings.push(msg) } });
      try {
        assert.equal(warnings.some((w) => /events\.retention is shorter than webhooks\.retryFor/.test(w)), warned, warnings.join('\n'));
      } finally {
        await tern.stop();
      }
    });
  }
});
