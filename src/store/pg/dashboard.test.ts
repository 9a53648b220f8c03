// What only PostgreSQL can show of the dashboard's tables: nodes adding
// to the same counters at once (every node bumps the current minute's
// rows in its events' transactions) lose no increment and never deadlock;
// and a database whose collation is not C still matches subjects as
// SQLite's LIKE does. The behaviour both stores share is tested in
// ../dashboard.test.ts.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { SyncPgClient } from './sync-client.ts';
import { migrate } from './schema.ts';
import { pgTransaction } from './tx.ts';
import { pgDashboardStore } from './dashboard.ts';
import { ID_TOP } from '../dashboard.ts';
import { containsPattern } from '../../dashboard/search.ts';
import { storeKinds } from '../../../test/helpers/stores.ts';

const kind = storeKinds().find((k) => k.name === 'postgres')!;

describe('dashboard tables shared by several nodes (postgres)', { skip: kind.skip }, () => {
  it('threads adding to the same counters at once, each in its own order: every increment counted, no deadlock', async () => {
    const url = kind.location();
    const db = new SyncPgClient(url);
    migrate(db);
    const THREADS = 4;
    const ROUNDS = 150;
    const KEYS = 40;
    const go = new SharedArrayBuffer(4);
    const workers = Array.from({ length: THREADS }, (_, i) => adder(url, go, { rounds: ROUNDS, keys: KEYS, seed: i + 1 }));
    try {
      await Promise.all(workers.map((w) => w.ready));
      Atomics.store(new Int32Array(go), 0, 1);
      Atomics.notify(new Int32Array(go), 0);
      await Promise.all(workers.map((w) => w.done));
      const rows = db.rows<{ key: string; count: number }>('SELECT key, count FROM dash_stats ORDER BY key');
      assert.equal(rows.length, KEYS);
      assert.deepEqual(new Set(rows.map((r) => r.count)), new Set([THREADS * ROUNDS]));
    } finally {
      for (const w of workers) w.stop();
      db.close();
    }
  });

  it('in a database whose collation folds more than ASCII, a subject still matches as SQLite\'s LIKE does', () => {
    const base = kind.location();
    const admin = new SyncPgClient(base);
    const name = `utf8_${process.pid}`;
    // glibc's C.UTF-8 (always present on Debian) lowers É to é, where the C collation does not.
    admin.exec(`CREATE DATABASE ${name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.utf8'`);
    const url = base.replace(/\/[^/]+$/, `/${name}`);
    const db = new SyncPgClient(url);
    try {
      migrate(db);
      assert.equal(db.one<{ folded: boolean }>("SELECT 'Émile' ILIKE 'émile' AS folded")!.folded, true, 'this database folds É');
      db.query("INSERT INTO messages (id, sender, created_at, subject) VALUES ('0000000000ABCDE', 'a@tern.test', 1, 'Café Émile')");
      const dashboard = pgDashboardStore(db, pgTransaction(db));
      const w = { below: ID_TOP, from: '', since: 0, until: Number.MAX_SAFE_INTEGER };
      const hits = (q: string) => dashboard.idsBySubject(containsPattern(q), w, 10, 100).ids.length;
      assert.deepEqual(['CAFé', 'café Émile', 'CAFÉ', 'émile'].map(hits), [1, 1, 0, 0]);
    } finally {
      db.close();
      admin.close();
    }
  });
});

/**
 * A thread with its own connection that, once `go` turns 1, adds 1 to each
 * of `keys` counters of one bucket `rounds` times, one addStats (one
 * transaction) per round, the keys shuffled anew each time. The code is
 * evaluated (no file of its own); it loads the store's modules by URL.
 */
function adder(url: string, go: SharedArrayBuffer, o: { rounds: number; keys: number; seed: number }): { ready: Promise<void>; done: Promise<void>; stop(): void } {
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    (async () => {
      const { SyncPgClient } = await import(workerData.modules.client);
      const { pgTransaction } = await import(workerData.modules.tx);
      const { pgDashboardStore } = await import(workerData.modules.dashboard);
      const db = new SyncPgClient(workerData.url);
      const tx = pgTransaction(db);
      const store = pgDashboardStore(db, tx);
      db.one('SELECT 1');
      parentPort.postMessage({ ready: true });
      Atomics.wait(new Int32Array(workerData.go), 0, 0);
      const { rounds, keys } = workerData.o;
      let seed = workerData.o.seed;
      const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
      const deltas = Array.from({ length: keys }, (_, i) => ({ span: 60000, metric: 'domain', bucket: 0, key: 'k' + String(i).padStart(2, '0'), count: 1 }));
      for (let r = 0; r < rounds; r++) {
        for (let i = deltas.length - 1; i > 0; i--) {
          const j = Math.floor(random() * (i + 1));
          [deltas[i], deltas[j]] = [deltas[j], deltas[i]];
        }
        tx(() => store.addStats(deltas));
      }
      db.close();
      parentPort.postMessage({ done: true });
    })().catch((e) => parentPort.postMessage({ error: String((e && e.stack) || e) }));`;
  const modules = {
    client: new URL('./sync-client.ts', import.meta.url).href,
    tx: new URL('./tx.ts', import.meta.url).href,
    dashboard: new URL('./dashboard.ts', import.meta.url).href,
  };
  const worker = new Worker(code, { eval: true, workerData: { url, go, o, modules } });
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  const done = new Promise<void>((resolve, reject) => {
    worker.on('message', (m: { ready?: true; done?: true; error?: string }) => {
      if (m.ready) ready();
      else if (m.done) resolve();
      else reject(new Error(m.error));
    });
    worker.on('error', reject);
    worker.on('exit', (code) => reject(new Error(`adder exited (${code})`)));
  });
  return { ready: readyP, done, stop: () => void worker.terminate() };
}
