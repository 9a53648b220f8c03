// The HTTP API's second part (issue 13) end to end: tags carried into events
// and the message view, Idempotency-Key (replay, 422, 409, across a restart,
// per API key) and POST /v1/messages/batch, with real fetch against a real
// server. Queued messages are counted from the event stream itself (emitted
// at commit, before the 202), by the test's own tag.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { hashApiKey } from '../../src/api/keys.ts';
import { requestHash } from '../../src/api/idempotency.ts';
import { openStore } from '../../src/store/store.ts';
import { mailbox, waitFor, writeConfig } from '../helpers/server.ts';
import type { MessageEvent } from '../../src/events/events.ts';
import { createKey } from '../helpers/apikey.ts';


interface SendResult {
  id: string;
  messageId: string;
  recipients: { address: string; status: string }[];
}

describe('HTTP API: tags, Idempotency-Key, batch', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let base: string;
  let alice: string;
  let alice2: string;
  let admin: string;
  /** Queue ids of `queued` events, by the message's `case` tag. */
  const queued = new Map<string, Set<string>>();

  const start = async () => {
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    base = `http://127.0.0.1:${tern.ports.find((p) => p.role === 'http')!.port}`;
    tern.events.subscribe((e) => {
      const c = e.data.tags?.case;
      if (e.type === 'queued' && c !== undefined) {
        if (!queued.has(c)) queued.set(c, new Set());
        queued.get(c)!.add(e.queueId);
      }
    });
  };
  const count = (c: string) => queued.get(c)?.size ?? 0;

  before(async () => {
    cfg = writeConfig({ listeners: [{ role: 'http', address: '127.0.0.1', port: 0 }] });
    await start();
    alice = createKey(cfg.file, 'alice-app', '--send-as', 'alice@tern.test');
    alice2 = createKey(cfg.file, 'alice-app-2', '--send-as', 'alice@tern.test');
    admin = createKey(cfg.file, 'ops', '--admin');
  });

  after(async () => {
    await tern?.stop(500);
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  const api = (path: string, key: string, init: RequestInit = {}) =>
    fetch(base + path, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers } });
  const post = (key: string, body: unknown, idem?: string, path = '/v1/messages') =>
    api(path, key, { method: 'POST', body: JSON.stringify(body), headers: idem !== undefined ? { 'idempotency-key': idem } : {} });
  const raw = (c: string, subject = c) => ({
    from: 'alice@tern.test',
    to: ['bob@tern.test'],
    raw: `From: alice@tern.test\nTo: bob@tern.test\nSubject: ${subject}\n\nHello.\n`,
    tags: { case: c },
  });

  async function problemOf(res: Response, status: number): Promise<{ detail: string; errors?: { path: string; message: string }[] }> {
    assert.equal(res.status, status);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    return (await res.json()) as { detail: string; errors?: { path: string; message: string }[] };
  }

  it('carries tags into every event\'s data.tags and into GET /v1/messages/{id}; never into the message', async () => {
    const res = await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], subject: 'Tagged', text: 'Hi.', tags: { case: 'tags', campaign: 'spring-2027', 'user.id': '42' } });
    assert.equal(res.status, 202);
    const { id } = (await res.json()) as SendResult;
    const view = (await waitFor(async () => {
      const v = (await (await api(`/v1/messages/${id}`, alice)).json()) as { tags: Record<string, string> | null; recipients: { status: string }[]; events: MessageEvent[] };
      return v.recipients[0]?.status === 'delivered' ? v : null;
    }, 10_000, 'delivered'))!;
    const tags = { case: 'tags', campaign: 'spring-2027', 'user.id': '42' };
    assert.deepEqual(view.tags, tags);
    assert.deepEqual(view.events.map((e) => e.type), ['queued', 'delivered']);
    for (const e of view.events) assert.deepEqual(e.data.tags, tags, e.type);
    const page = (await (await api(`/v1/events?type=delivered&recipient=bob@tern.test`, alice)).json()) as { events: MessageEvent[] };
    assert.deepEqual(page.events.find((e) => e.queueId === id)?.data.tags, tags);
    // Metadata only: the delivered message has no trace of them.
    const file = mailbox(cfg.dataDir, 'tern.test', 'bob').map((f) => fs.readFileSync(f, 'latin1')).find((m) => m.includes('Subject: Tagged'));
    assert.ok(file, 'delivered');
    assert.doesNotMatch(file, /spring-2027|X-Tern-Tags/i);
  });

  it('validates tags: count, name and value', async () => {
    const many = Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`t${i}`, 'x']));
    assert.ok((await problemOf(await post(alice, { ...raw('bad'), tags: many }), 400)).errors?.some((e) => e.path === '/body/tags'));
    assert.ok((await problemOf(await post(alice, { ...raw('bad'), tags: { 'no spaces': 'x' } }), 400)).errors?.some((e) => e.path.startsWith('/body/tags')));
    assert.ok((await problemOf(await post(alice, { ...raw('bad'), tags: { k: 'a\r\nBcc: x@y' } }), 400)).errors?.some((e) => e.path === '/body/tags/k'));
    assert.ok((await problemOf(await post(alice, { ...raw('bad'), tags: { k: 7 } }), 400)).errors?.some((e) => e.path === '/body/tags/k'));
    assert.equal(count('bad'), 0);
  });

  it('Idempotency-Key: the same body again gets the first response and queues nothing; key order and spacing do not matter', async () => {
    const body = raw('idem-same');
    const first = await post(alice, body, 'order-1001');
    assert.equal(first.status, 202);
    assert.equal(first.headers.get('idempotent-replayed'), null);
    const r1 = (await first.json()) as SendResult;
    // The same JSON with its keys in another order, and spaced: the same request.
    const reordered = JSON.stringify({ tags: body.tags, raw: body.raw, to: body.to, from: body.from }, null, 2);
    const again = await api('/v1/messages', alice, { method: 'POST', body: reordered, headers: { 'idempotency-key': 'order-1001' } });
    assert.equal(again.status, 202);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(await again.json(), r1);
    assert.equal(count('idem-same'), 1);
    // Another body under the same key: 422, still nothing queued.
    const p = await problemOf(await post(alice, raw('idem-same', 'changed'), 'order-1001'), 422);
    assert.match(p.detail, /different request/);
    assert.equal(count('idem-same'), 1);
    // The same key on the batch route is another request.
    await problemOf(await post(alice, { messages: [body] }, 'order-1001', '/v1/messages/batch'), 422);
  });

  it('Idempotency-Key is scoped to the API key: another key with the same idempotency key sends anew', async () => {
    const r1 = (await (await post(alice, raw('idem-scope'), 'shared-key')).json()) as SendResult;
    const res = await post(alice2, raw('idem-scope'), 'shared-key');
    assert.equal(res.status, 202);
    assert.equal(res.headers.get('idempotent-replayed'), null);
    const r2 = (await res.json()) as SendResult;
    assert.notEqual(r2.id, r1.id);
    assert.equal(count('idem-scope'), 2);
  });

  it('Idempotency-Key: 409 while the first request is in flight, then it proceeds once that one is gone', async () => {
    const body = raw('idem-flight');
    // The first request, held in flight by another process on the same store (as another node would, or a
    // request still inside intake): its claim is made exactly as the server makes it.
    const other = openStore(cfg.dataDir);
    try {
      assert.equal(other.claimIdempotency(hashApiKey(alice), 'flight-1', requestHash('/v1/messages', body), Date.now(), () => false), null);
      const p = await problemOf(await post(alice, body, 'flight-1'), 409);
      assert.match(p.detail, /in flight/);
      // A different body is refused for what it is, in flight or not.
      await problemOf(await post(alice, raw('idem-flight', 'other'), 'flight-1'), 422);
      assert.equal(count('idem-flight'), 0);
      other.releaseIdempotency(hashApiKey(alice), 'flight-1');
    } finally {
      other.close();
    }
    assert.equal((await post(alice, body, 'flight-1')).status, 202);
    assert.equal(count('idem-flight'), 1);
  });

  it('Idempotency-Key under concurrency: of simultaneous identical requests one sends, the rest get 409 or its response', async () => {
    const body = raw('idem-race');
    const answers = await Promise.all(Array.from({ length: 8 }, () => post(alice, body, 'race-1')));
    const ids = new Set<string>();
    for (const res of answers) {
      assert.ok(res.status === 202 || res.status === 409, String(res.status));
      if (res.status === 202) ids.add(((await res.json()) as SendResult).id);
      else await res.body?.cancel();
    }
    assert.equal(ids.size, 1, 'every 202 names the same message');
    assert.equal(count('idem-race'), 1);
  });

  it('a refused first request is not remembered: the retry runs again', async () => {
    const body = { ...raw('idem-refused'), to: ['nobody@tern.test'] };
    await problemOf(await post(alice, body, 'refused-1'), 400);
    await problemOf(await post(alice, body, 'refused-1'), 400);
    assert.equal(count('idem-refused'), 0);
  });

  it('refuses an Idempotency-Key over 255 characters (400 naming the header)', async () => {
    const p = await problemOf(await post(alice, raw('idem-long'), 'k'.repeat(256)), 400);
    assert.ok(p.errors?.some((e) => e.path === '/headers/idempotency-key'), JSON.stringify(p.errors));
    assert.equal((await post(alice, raw('idem-long'), 'k'.repeat(255))).status, 202);
  });

  it('POST /v1/messages/batch: 207, one result per message in order; a bad message fails alone with paths under /body/messages/N', async () => {
    const good = (n: number) => raw('batch-mixed', `batch ${n}`);
    const messages: unknown[] = [good(0), good(1), good(2), { ...good(3), to: [42] }, { ...good(4), subjet: 'typo' }, { ...good(5), to: ['nobody@tern.test'] }, { ...good(6), from: 'mallory@tern.test' }, good(7)];
    const res = await post(alice, { messages }, undefined, '/v1/messages/batch');
    assert.equal(res.status, 207);
    const { results } = (await res.json()) as { results: ({ status: number } & Partial<SendResult> & { error?: { status: number; detail: string; errors?: { path: string }[] } })[] };
    assert.deepEqual(results.map((r) => r.status), [202, 202, 202, 400, 400, 400, 403, 202]);
    for (const i of [0, 1, 2, 7]) {
      assert.match(results[i]!.id ?? '', /^\w+$/);
      assert.deepEqual(results[i]!.recipients, [{ address: 'bob@tern.test', status: 'queued' }]);
      assert.equal(results[i]!.error, undefined);
    }
    assert.equal(new Set([0, 1, 2, 7].map((i) => results[i]!.id)).size, 4);
    const paths = (i: number) => results[i]!.error?.errors?.map((e) => e.path) ?? [];
    assert.ok(paths(3).includes('/body/messages/3/to/0'), JSON.stringify(results[3]));
    assert.ok(paths(4).includes('/body/messages/4/subjet'), JSON.stringify(results[4]));
    assert.ok(paths(5).includes('/body/messages/5/to/0'), JSON.stringify(results[5]));
    assert.match(results[5]!.error!.detail, /^\/body\/messages\/5\/to\/0: /);
    assert.ok(paths(6).includes('/body/messages/6/from'), JSON.stringify(results[6]));
    assert.equal(results[3]!.error!.status, 400);
    assert.equal(count('batch-mixed'), 4);
    // Each queued message is readable on its own.
    assert.equal((await api(`/v1/messages/${results[7]!.id}`, admin)).status, 200);
  });

  it('POST /v1/messages/batch: more than 500 messages, none, or no list is a 400 naming /body/messages; nothing is sent', async () => {
    const over = await problemOf(await post(alice, { messages: Array.from({ length: 501 }, () => raw('batch-over')) }, undefined, '/v1/messages/batch'), 400);
    assert.ok(over.errors?.some((e) => e.path === '/body/messages'), JSON.stringify(over.errors));
    await problemOf(await post(alice, { messages: [] }, undefined, '/v1/messages/batch'), 400);
    await problemOf(await post(alice, { message: [] }, undefined, '/v1/messages/batch'), 400);
    assert.equal(count('batch-over'), 0);
  });

  it('POST /v1/messages/batch: 500 messages are sent, and an Idempotency-Key replays the whole 207', async () => {
    const messages = Array.from({ length: 500 }, (_, i) => raw('batch-500', `n${i}`));
    const first = await post(alice, { messages }, 'batch-500', '/v1/messages/batch');
    assert.equal(first.status, 207);
    const r1 = (await first.json()) as { results: { status: number; id: string }[] };
    assert.equal(r1.results.length, 500);
    assert.ok(r1.results.every((r) => r.status === 202));
    assert.equal(count('batch-500'), 500);
    const again = await post(alice, { messages }, 'batch-500', '/v1/messages/batch');
    assert.equal(again.status, 207);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(await again.json(), r1);
    assert.equal(count('batch-500'), 500);
  });

  it('Idempotency-Key holds across a restart', async () => {
    const body = raw('idem-restart');
    const r1 = (await (await post(alice, body, 'restart-1')).json()) as SendResult;
    assert.equal(count('idem-restart'), 1);
    await tern.stop(500);
    await start();
    const again = await post(alice, body, 'restart-1');
    assert.equal(again.status, 202);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(await again.json(), r1);
    await problemOf(await post(alice, raw('idem-restart', 'changed'), 'restart-1'), 422);
    // Give the new server's queue a moment: a second send would have shown as a queued event at once.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(count('idem-restart'), 1);
  });

  it('the OpenAPI document has the batch route, tags and the Idempotency-Key header', async () => {
    const doc = (await (await fetch(`${base}/v1/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { parameters?: { name: string; in: string; schema: { maxLength: number } }[]; requestBody?: { content: Record<string, { schema: { properties: Record<string, { maxItems?: number; items?: { properties?: object } }> } }> }; responses: Record<string, unknown> }>>;
    };
    const batch = doc.paths['/v1/messages/batch']!.post!;
    const messages = batch.requestBody!.content['application/json']!.schema.properties.messages!;
    assert.equal(messages.maxItems, 500);
    assert.ok(messages.items?.properties && 'tags' in messages.items.properties, 'each batch item is the full send schema');
    assert.ok('207' in batch.responses && '409' in batch.responses && '422' in batch.responses);
    for (const op of [batch, doc.paths['/v1/messages']!.post!]) {
      const h = op.parameters?.find((p) => p.name === 'Idempotency-Key');
      assert.equal(h?.in, 'header');
      assert.equal(h?.schema.maxLength, 255);
    }
    assert.ok('tags' in doc.paths['/v1/messages']!.post!.requestBody!.content['application/json']!.schema.properties);
  });
});
