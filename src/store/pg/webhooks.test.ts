// What only a shared outbox can show (issue 17: exactly one delivery per
// webhook event across nodes): two connections to one database stand for
// two nodes. A claim skips the rows another node is claiming instead of
// waiting for them, a row is never handed out twice (also with several
// threads claiming at once), a lease that ran out goes to the other node,
// and a node's start ends only leases that ran out. The behaviour both
// stores share is tested in ../webhooks.test.ts.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { SyncPgClient } from './sync-client.ts';
import { migrate } from './schema.ts';
import { pgTransaction } from './tx.ts';
import { pgWebhookStore, PG_WEBHOOK_SQL } from './webhooks.ts';
import type { OutboxInsert, WebhookStore } from '../webhooks.ts';
import { storeKinds } from '../../../test/helpers/stores.ts';

const kind = storeKinds().find((k) => k.name === 'postgres')!;

const T0 = 1_765_000_000_000;

function row(webhookId: string, eventId: string, nextAttempt: number): OutboxInsert {
  return { webhookId, eventId, eventAt: T0, body: `{"id":"${eventId}"}`, nextAttempt };
}

/** A node: its own connection to the shared database, and the webhook store on it. */
interface Node {
  db: SyncPgClient;
  store: WebhookStore;
}

function node(url: string, timeoutMs = 30_000): Node {
  const db = new SyncPgClient(url, { timeoutMs });
  return { db, store: pgWebhookStore(db, pgTransaction(db)) };
}

/** Two nodes on one fresh, migrated database; `b` gives up on an answer after 5 s, so a claim that waits for a lock fails instead of hanging. */
function twoNodes(): { url: string; a: Node; b: Node; close(): void } {
  const url = kind.location();
  const a = node(url);
  migrate(a.db);
  const b = node(url, 5000);
  return {
    url,
    a,
    b,
    close: () => {
      a.db.close();
      b.db.close();
    },
  };
}

describe('webhook outbox shared by several nodes (postgres)', { skip: kind.skip }, () => {
  it('a claim skips the rows another node is claiming, without waiting; a rolled-back claim frees them', () => {
    const { a, b, close } = twoNodes();
    try {
      a.store.enqueue(Array.from({ length: 10 }, (_, i) => row('wh_a', `e${i}`, T0 + i)));
      // Node a claims in an open transaction (as the dispatcher's tick does): its rows are locked, their lease not yet visible to b.
      a.store.transaction(() => {
        assert.deepEqual(a.store.claim('wh_a', T0 + 100, T0 + 60_000, 3).map((r) => r.eventId), ['e0', 'e1', 'e2']);
        // Without SKIP LOCKED, b would wait here for a's commit (and its client time out).
        assert.deepEqual(b.store.claim('wh_a', T0 + 100, T0 + 60_000, 10).map((r) => r.eventId), ['e3', 'e4', 'e5', 'e6', 'e7', 'e8', 'e9']);
      });
      assert.deepEqual(b.store.claim('wh_a', T0 + 100, T0 + 60_000, 10), [], 'a committed: its three are leased');

      // A node whose transaction fails after its claim (its tick threw, or it lost the connection) holds nothing.
      a.store.enqueue([row('wh_b', 'x1', T0), row('wh_b', 'x2', T0)]);
      assert.throws(() =>
        a.store.transaction(() => {
          assert.equal(a.store.claim('wh_b', T0, T0 + 60_000, 10).length, 2);
          assert.deepEqual(b.store.claim('wh_b', T0, T0 + 60_000, 10), [], 'locked by a, skipped');
          throw new Error('the tick failed');
        }),
      );
      assert.deepEqual(b.store.claim('wh_b', T0, T0 + 60_000, 10).map((r) => r.eventId), ['x1', 'x2']);
    } finally {
      close();
    }
  });

  it('the rows of a node that died go to another when their lease runs out; nextDue says when', () => {
    const { a, b, close } = twoNodes();
    try {
      b.store.enqueue([row('wh_a', 'e1', T0), row('wh_a', 'e2', T0 + 10)]);
      assert.equal(a.store.claim('wh_a', T0 + 20, T0 + 1000, 10).length, 2);
      // Node a dies here, its POSTs unanswered.
      assert.deepEqual(b.store.claim('wh_a', T0 + 999, T0 + 5000, 10), [], 'the lease still holds');
      // Unlike the embedded store's nextDue (unleased rows only), a lease's end counts: b has no other row of wh_a, and comes back then.
      assert.equal(b.store.nextDue('wh_a'), T0 + 1001);
      assert.deepEqual(b.store.claim('wh_a', T0 + 1001, T0 + 5000, 10).map((r) => [r.eventId, r.attempts]), [['e1', 0], ['e2', 0]]);
      // An unleased row due earlier than a lease's end comes first.
      b.store.enqueue([row('wh_a', 'e3', T0 + 2000)]);
      assert.equal(b.store.nextDue('wh_a'), T0 + 2000);
      b.store.finish(b.store.claim('wh_a', T0 + 2000, T0 + 9000, 10)[0]!.seq);
      assert.equal(a.store.nextDue('wh_a'), T0 + 5001);
      assert.equal(a.store.nextDue('wh_none'), null);
    } finally {
      close();
    }
  });

  it('fencing: a node whose lease ran out and whose row another node claimed since cannot finish, reschedule or release it', () => {
    const { a, b, close } = twoNodes();
    try {
      b.store.enqueue([row('wh_a', 'e1', T0), row('wh_a', 'e2', T0)]);
      const [e1, e2] = a.store.claim('wh_a', T0, T0 + 1000, 10);
      // a stalls past its lease; b takes both rows over.
      assert.equal(b.store.claim('wh_a', T0 + 1001, T0 + 9000, 10).length, 2);
      // a wakes up with its (late) results: none of them touches b's rows.
      a.store.finishMany([e1!.seq]);
      a.store.reschedule(e2!.seq, 1, T0 + 5000);
      a.store.release([e1!.seq, e2!.seq]);
      assert.deepEqual(b.store.claim('wh_a', T0 + 1002, T0 + 9000, 10), [], 'both still leased to b');
      assert.equal(a.store.countPending('wh_a', 10), 2, 'nothing was deleted');
      // b's own results count.
      b.store.finishMany([e1!.seq]);
      b.store.reschedule(e2!.seq, 1, T0 + 5000);
      assert.equal(b.store.countPending('wh_a', 10), 1);
      assert.deepEqual(a.store.claim('wh_a', T0 + 5000, T0 + 9000, 10).map((r) => [r.eventId, r.attempts]), [['e2', 1]], 'rescheduled by b, unleased, and claimable again');
      // A holder whose lease merely ran out, with no one else claiming, still finishes its row.
      a.store.finish(e2!.seq);
      assert.equal(a.store.countPending('wh_a', 10), 0);
    } finally {
      close();
    }
  });

  it('a node\'s start ends only the leases that ran out, not a live node\'s', () => {
    const { a, b, close } = twoNodes();
    try {
      a.store.enqueue([row('wh_a', 'live', T0), row('wh_a', 'dead', T0 + 1)]);
      const now = Date.now();
      assert.deepEqual(a.store.claim('wh_a', now, now + 60_000, 1).map((r) => r.eventId), ['live']);
      // 'dead': leased by a node that stopped, its lease ended a second ago.
      assert.deepEqual(b.store.claim('wh_a', now - 2000, now - 1000, 1).map((r) => r.eventId), ['dead']);
      assert.equal(b.store.releaseAllClaims(), 1);
      assert.equal(b.store.releaseAllClaims(), 0);
      assert.equal(b.store.nextDue('wh_a'), T0 + 1, 'dead is unleased, due at its next attempt');
      assert.deepEqual(b.store.claim('wh_a', Date.now(), Date.now() + 60_000, 10).map((r) => r.eventId), ['dead'], 'live stays with a');
    } finally {
      close();
    }
  });

  it('threads claiming from one outbox at once: every row is handed out exactly once', async () => {
    const { url, a, close } = twoNodes();
    const ROWS = 2000;
    const THREADS = 4;
    a.store.enqueue(Array.from({ length: ROWS }, (_, i) => row('wh_a', `e${i}`, T0 + (i % 50))));
    // Each thread is a node: its own connection, claiming small batches until nothing is left; they start together.
    const go = new SharedArrayBuffer(4);
    const workers = Array.from({ length: THREADS }, () => claimer(url, go));
    try {
      await Promise.all(workers.map((w) => w.ready));
      Atomics.store(new Int32Array(go), 0, 1);
      Atomics.notify(new Int32Array(go), 0);
      const got = await Promise.all(workers.map((w) => w.done));
      const all = got.flat();
      assert.equal(new Set(all).size, all.length, 'no row twice');
      assert.equal(all.length, ROWS, 'every row once');
      assert.ok(got.filter((g) => g.length > 0).length > 1, `the threads shared the work: ${got.map((g) => g.length).join(', ')}`);
      assert.equal(a.db.one<{ n: number }>('SELECT count(*) AS n FROM webhook_outbox WHERE claimed_until IS NULL')!.n, 0);
    } finally {
      for (const w of workers) w.stop();
      close();
    }
  });

  it('claim and nextDue walk their indexes, however large a webhook\'s backlog', () => {
    const { a, close } = twoNodes();
    try {
      // A receiver down for long: 20,000 rows of one webhook due, the earliest 64 leased; other webhooks' rows beside them.
      a.db.exec(`INSERT INTO webhook_outbox (webhook_id, event_id, event_at, body, next_attempt, claimed_until)
                   SELECT CASE WHEN i <= 20000 THEN 'wh_big' ELSE 'wh_' || (i % 50) END, 'e' || i, i, '{}', i, CASE WHEN i <= 64 THEN 10000000 END
                   FROM generate_series(1, 30000) AS i;
                 ANALYZE webhook_outbox`);
      const plan = (sql: string, args: unknown[]): string =>
        a.db.rows<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, args).map((r) => r['QUERY PLAN']).join(' | ');
      const claim = plan(PG_WEBHOOK_SQL.claim, [T0, 'wh_big', 1_000_000, 10, 'node-plan']);
      // In index order with no Sort: the walk stops after the batch (and the leased rows before it).
      assert.match(claim, /LockRows.*Index Scan using webhook_outbox_due/, claim);
      assert.doesNotMatch(claim, /Seq Scan|Sort/, claim);
      const due = plan(PG_WEBHOOK_SQL.nextDue, ['wh_big']);
      assert.match(due, /Index Scan using webhook_outbox_due.*Index Scan using webhook_outbox_claimed/, due);
      assert.doesNotMatch(due, /Seq Scan|Sort/, due);
    } finally {
      close();
    }
  });
});

/**
 * A thread with its own connection that claims batches of 5 from wh_a until
 * none is left, once `go` turns 1; `done` gives the seqs it got. The code is
 * evaluated (no file of its own); it loads the store's modules by URL.
 */
function claimer(url: string, go: SharedArrayBuffer): { ready: Promise<void>; done: Promise<number[]>; stop(): void } {
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    (async () => {
      const { SyncPgClient } = await import(workerData.modules.client);
      const { pgTransaction } = await import(workerData.modules.tx);
      const { pgWebhookStore } = await import(workerData.modules.webhooks);
      const db = new SyncPgClient(workerData.url);
      const store = pgWebhookStore(db, pgTransaction(db));
      db.one('SELECT 1');
      parentPort.postMessage({ ready: true });
      Atomics.wait(new Int32Array(workerData.go), 0, 0);
      const got = [];
      for (;;) {
        const now = Date.now();
        const rows = store.claim('wh_a', now, now + 600000, 5);
        if (rows.length === 0) break;
        for (const r of rows) got.push(r.seq);
      }
      db.close();
      parentPort.postMessage({ got });
    })().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));`;
  const modules = {
    client: new URL('./sync-client.ts', import.meta.url).href,
    tx: new URL('./tx.ts', import.meta.url).href,
    webhooks: new URL('./webhooks.ts', import.meta.url).href,
  };
  const worker = new Worker(code, { eval: true, workerData: { url, go, modules } });
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  const done = new Promise<number[]>((resolve, reject) => {
    worker.on('message', (m: { ready?: true; got?: number[]; error?: string }) => {
      if (m.ready) ready();
      else if (m.got) resolve(m.got);
      else reject(new Error(m.error));
    });
    worker.on('error', reject);
    worker.on('exit', (code) => reject(new Error(`claimer exited (${code})`)));
  });
  return { ready: readyP, done, stop: () => void worker.terminate() };
}
