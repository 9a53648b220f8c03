// The dispatcher against real HTTP receivers on loopback, fed by the real
// events recorder: Standard Webhooks headers, retries with the same id and
// body, the concurrency limit, one slot for a failing endpoint (so a dead
// one does not hold up a healthy one), giving up after retryFor, 410.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Webhook } from 'standardwebhooks';
import { EventRecorder } from '../api/events-store.ts';
import { EventStream } from '../events/events.ts';
import type { QueuedMessage } from '../spool/types.ts';
import { openStore, type ApiKeyRecord, type Store } from '../store/store.ts';
import { silentLogger } from '../util/log.ts';
import { ACTIVE_REFRESH_MS } from './outbox.ts';
import { Webhooks } from './webhooks.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-dispatch-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

const ALICE: ApiKeyRecord = { name: 'alice-app', hash: 'h-alice', sendAs: ['alice@tern.test'], admin: false, createdAt: 0 };

interface Hit {
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

/** A receiver whose answer to each POST `answer` decides: a status, or 'hang' (never answers). */
async function receiver(answer: (hit: Hit, index: number) => number | 'hang'): Promise<{ url: string; hits: Hit[]; open: () => number; maxOpen: () => number; close: () => Promise<void> }> {
  const hits: Hit[] = [];
  let open = 0;
  let maxOpen = 0;
  const server = http.createServer((req, res) => {
    open++;
    maxOpen = Math.max(maxOpen, open);
    res.on('close', () => open--);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const hit = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
      hits.push(hit);
      const a = answer(hit, hits.length - 1);
      if (a !== 'hang') res.writeHead(a).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`,
    hits,
    open: () => open,
    maxOpen: () => maxOpen,
    close: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

async function setup(o: { timeoutMs?: number; retryForMs?: number; concurrency?: number; schedule?: number[]; shared?: boolean } = {}) {
  const store: Store = openStore(path.join(root, `d${n++}`));
  store.addApiKey(ALICE);
  const stream = new EventStream();
  const recorder = new EventRecorder({ events: stream, store, retentionMs: 86_400_000, log: silentLogger, flushMs: 5 });
  const webhooks = new Webhooks({
    store: store.webhooks,
    log: silentLogger,
    timeoutMs: o.timeoutMs ?? 2000,
    retryForMs: o.retryForMs ?? 60_000,
    concurrency: o.concurrency ?? 8,
    schedule: o.schedule ?? [50, 100],
    shared: o.shared,
    sharedPollMs: 200,
  });
  webhooks.attach(recorder);
  webhooks.start();
  let q = 0;
  /** `count` queued events of mail from alice, one message each; returns their event ids. */
  const emit = (count: number, sender = 'alice@tern.test'): string[] => {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const msg = { envelope: { id: `Q${q++}`, sender, recipients: [{ address: 'x@remote.test', original: 'x@remote.test' }], receivedAt: Date.now(), smtputf8: false, source: 'api' } } as unknown as QueuedMessage;
      ids.push(stream.emit('queued', msg, 0)!.id);
    }
    return ids;
  };
  return {
    store,
    webhooks,
    emit,
    close: async () => {
      await recorder.close();
      webhooks.close();
      store.close();
    },
  };
}

async function until<T>(fn: () => T, ms = 5000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('webhook dispatcher', () => {
  it('a shared outbox (several nodes): rows another node wrote are found by polling; without sharing nothing looks for them', async () => {
    for (const shared of [true, false]) {
      const rx = await receiver(() => 204);
      const t = await setup({ shared });
      try {
        const w = t.webhooks.create(ALICE, rx.url, null);
        // Written behind this dispatcher's back, as another node's events transaction would: no wake-up here.
        t.store.webhooks.enqueue([{ webhookId: w.id, eventId: 'evt_from_another_node', eventAt: Date.now(), body: '{"id":"evt_from_another_node"}', nextAttempt: Date.now() }]);
        if (shared) {
          await until(() => rx.hits.find((h) => h.headers['webhook-id'] === 'evt_from_another_node'), 3000, 'the polled row');
        } else {
          await new Promise((r) => setTimeout(r, 800));
          assert.equal(rx.hits.length, 0, 'one node alone is told of its own rows; it does not poll');
        }
      } finally {
        await t.close();
        await rx.close();
      }
    }
  });

  it('POSTs each event once with Standard Webhooks headers that the standardwebhooks package verifies', async () => {
    const rx = await receiver(() => 204);
    const t = await setup();
    try {
      const w = t.webhooks.create(ALICE, rx.url, null);
      const ids = t.emit(3);
      t.emit(1, 'mallory@evil.test'); // not alice's mail: never sent to her webhook
      await until(() => rx.hits.length >= 3, 5000, 'three deliveries');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(rx.hits.length, 3);
      const verifier = new Webhook(w.secret);
      for (const hit of rx.hits) {
        const payload = verifier.verify(hit.body, hit.headers as Record<string, string>) as { type: string; data: { id: string } };
        assert.equal(hit.headers['webhook-id'], payload.data.id);
        assert.equal(payload.type, 'queued');
        assert.equal(hit.headers['content-type'], 'application/json');
        assert.match(hit.headers['user-agent'] ?? '', /^Tern\/\S+ \(webhooks\)$/);
        assert.ok(Math.abs(Number(hit.headers['webhook-timestamp']) - Date.now() / 1000) < 5);
      }
      assert.deepEqual(rx.hits.map((h) => h.headers['webhook-id']).sort(), [...ids].sort());
      const [view] = t.webhooks.list(ALICE);
      assert.equal(view!.pending, 0);
      assert.deepEqual(view!.deliveries.map((d) => [d.outcome, d.status, d.attempt]), [['delivered', 204, 1], ['delivered', 204, 1], ['delivered', 204, 1]]);
      assert.equal(t.webhooks.counters.delivered, 3);
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('retries a failure after the schedule\'s delay with the same webhook-id and body, each attempt signed', async () => {
    const rx = await receiver((_h, i) => (i < 2 ? 500 : 200));
    const t = await setup({ schedule: [300, 300] });
    try {
      const w = t.webhooks.create(ALICE, rx.url, null);
      t.emit(1);
      await until(() => rx.hits.length >= 3, 5000, 'the third attempt');
      const [a, b, c] = rx.hits;
      assert.equal(new Set(rx.hits.map((h) => h.headers['webhook-id'])).size, 1);
      assert.equal(new Set(rx.hits.map((h) => h.body)).size, 1);
      assert.ok(b!.at - a!.at >= 280 && c!.at - b!.at >= 280, 'each retry waits for its delay');
      for (const h of rx.hits) new Webhook(w.secret).verify(h.body, h.headers as Record<string, string>);
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(rx.hits.length, 3, 'nothing after the success');
      assert.deepEqual(t.webhooks.list(ALICE)[0]!.deliveries.map((d) => [d.attempt, d.status, d.outcome]), [[3, 200, 'delivered'], [2, 500, 'retrying'], [1, 500, 'retrying']]);
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('a burst past what is taken from memory (512 per webhook): every event once, the fresh ones leased at write, the rest claimed; the outbox ends empty', async () => {
    // A slow receiver, so the in-memory backlog fills and later rows are left to claims.
    const rx = await receiver(() => 204);
    const t = await setup({ concurrency: 4 });
    try {
      const w = t.webhooks.create(ALICE, rx.url, null);
      const leasedAtWrite: number[] = [];
      const enqueueClaimed = t.store.webhooks.enqueueClaimed!.bind(t.store.webhooks);
      t.store.webhooks.enqueueClaimed = (rows, until) => (leasedAtWrite.push(rows.length), enqueueClaimed(rows, until));
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        ids.push(...t.emit(300));
        await new Promise((r) => setTimeout(r, 10));
      }
      await until(() => rx.hits.length >= ids.length, 20_000, 'every event');
      await new Promise((r) => setTimeout(r, 300));
      const got = rx.hits.map((h) => h.headers['webhook-id'] as string);
      assert.equal(got.length, ids.length, 'no event twice');
      assert.deepEqual([...got].sort(), [...ids].sort(), 'every event');
      const leased = leasedAtWrite.reduce((a, b) => a + b, 0);
      assert.ok(leased > 0 && leased < ids.length, `some rows leased at write (${leased}), the others claimed`);
      await until(() => t.store.webhooks.countPending(w.id, 10) === 0, 5000, 'an empty outbox');
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('keeps at most webhooks.concurrency POSTs in flight', async () => {
    const rx = await receiver(() => 'hang');
    const t = await setup({ concurrency: 3, timeoutMs: 500, schedule: [60_000] });
    try {
      t.webhooks.create(ALICE, rx.url, null);
      t.emit(10);
      await until(() => rx.hits.length >= 3, 5000, 'three POSTs');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(rx.maxOpen(), 3);
      assert.equal(rx.hits.length, 3, 'the others wait for a slot');
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('gives a failing endpoint one slot, so a dead endpoint does not hold up a healthy one', async () => {
    const dead = await receiver(() => 'hang');
    const live = await receiver(() => 200);
    const t = await setup({ concurrency: 4, timeoutMs: 300, schedule: [100] });
    try {
      t.webhooks.create(ALICE, dead.url, null);
      t.webhooks.create(ALICE, live.url, null);
      t.emit(40);
      await until(() => live.hits.length >= 40, 5000, 'every event at the healthy endpoint');
      // Before its first timeout the dead endpoint had its share of the slots; after it, one.
      const firstFailure = dead.hits[0]!.at + 300;
      await new Promise((r) => setTimeout(r, 1500));
      const later = dead.hits.filter((h) => h.at > firstFailure + 50);
      const overlapping = later.filter((h, i) => later.slice(i + 1).some((o) => o.at - h.at < 250));
      assert.deepEqual(overlapping, [], 'one attempt at a time after a failure');
      assert.ok(dead.hits.length <= 4 + 1500 / 300 + 1, `${dead.hits.length} attempts at the dead endpoint`);
    } finally {
      await t.close();
      await dead.close();
      await live.close();
    }
  });

  it('a claimed row whose event is no longer stored (events.retention shorter than the retries) is given up, not POSTed', async () => {
    const rx = await receiver(() => 204);
    const t = await setup({ shared: true });
    try {
      const w = t.webhooks.create(ALICE, rx.url, null);
      // Rows written with their events carry no payload; this one's event is gone.
      t.store.webhooks.enqueue([{ webhookId: w.id, eventId: 'evt_expired', eventAt: Date.now(), nextAttempt: Date.now() }]);
      const [live] = t.emit(1);
      await until(() => rx.hits.find((h) => h.headers['webhook-id'] === live), 3000, 'the live event');
      await until(() => t.webhooks.counters.failed === 1, 3000, 'the give-up');
      await until(() => t.store.webhooks.countPending(w.id, 10) === 0, 3000, 'an empty outbox');
      assert.deepEqual(rx.hits.map((h) => h.headers['webhook-id']), [live]);
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('gives an event up once its next retry would fall after retryFor', async () => {
    const rx = await receiver(() => 503);
    const t = await setup({ retryForMs: 500, schedule: [150] });
    try {
      t.webhooks.create(ALICE, rx.url, null);
      t.emit(1);
      await until(() => t.webhooks.counters.failed === 1, 5000, 'the give-up');
      const count = rx.hits.length;
      assert.ok(count >= 3 && count <= 4, `${count} attempts in 500 ms at 150 ms apart`);
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(rx.hits.length, count, 'no attempt after giving up');
      const [view] = t.webhooks.list(ALICE);
      assert.equal(view!.pending, 0);
      assert.equal(view!.deliveries[0]!.outcome, 'failed');
      assert.equal(view!.deliveries[0]!.attempt, count);
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('disables the webhook on 410: no more POSTs, its other events dropped, the reason recorded', async () => {
    const rx = await receiver(() => 410);
    const t = await setup({ concurrency: 1 });
    try {
      t.webhooks.create(ALICE, rx.url, null);
      t.emit(5);
      await until(() => t.webhooks.counters.disabled === 1, 5000, '410');
      t.emit(2);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(rx.hits.length, 1);
      const [view] = t.webhooks.list(ALICE);
      assert.notEqual(view!.disabledAt, null);
      assert.match(view!.disabledReason ?? '', /410/);
      assert.equal(view!.pending, 0, 'its outbox rows were purged');
      assert.equal(view!.deliveries[0]!.outcome, 'disabled');
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('stops a revoked key\'s webhook within ACTIVE_REFRESH_MS (`tern apikey revoke` is another process) and drops its pending events', async () => {
    const rx = await receiver(() => 500);
    const t = await setup({ schedule: [200] });
    try {
      const w = t.webhooks.create(ALICE, rx.url, null);
      t.emit(3);
      await until(() => rx.hits.length >= 3, 5000, 'first attempts');
      const revokedAt = Date.now();
      t.store.revokeApiKey(ALICE.name);
      await until(() => t.store.webhooks.countPending(w.id, 10) === 0, ACTIVE_REFRESH_MS + 2000, 'the purge');
      assert.ok(Date.now() - revokedAt >= ACTIVE_REFRESH_MS - 500, 'not before the list was read again');
      const count = rx.hits.length;
      t.emit(2);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(rx.hits.length, count, 'nothing sent after that');
      assert.ok(rx.hits.every((h) => h.at <= revokedAt + ACTIVE_REFRESH_MS + 300));
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('times an attempt out after webhooks.timeout, counting the whole answer, and retries it', async () => {
    // Headers at once, then a body that never ends: the timeout covers the answer to its last byte.
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('partial');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    let posts = 0;
    server.on('request', () => posts++);
    const t = await setup({ timeoutMs: 250, schedule: [100] });
    try {
      t.webhooks.create(ALICE, `http://127.0.0.1:${(server.address() as { port: number }).port}/`, null);
      t.emit(1);
      await until(() => posts >= 2, 5000, 'a retry');
      t.webhooks.close();
      const d = t.store.webhooks.recentDeliveries(t.webhooks.list(ALICE)[0]!.id, 10).at(-1)!;
      assert.equal(d.status, null);
      assert.match(d.error ?? '', /timed out after 250 ms/);
      assert.ok(d.durationMs >= 240 && d.durationMs < 1000, String(d.durationMs));
    } finally {
      await t.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
