// The suppression list and the TLS-RPT tables shared by several nodes
// through one PostgreSQL database (issue 17): each "node" here is its own
// connection (its own SyncPgClient), and where two must really run at once,
// its own thread. PostgreSQL only: the embedded store has one node.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { SyncPgClient } from './sync-client.ts';
import { migrate } from './schema.ts';
import { pgTransaction } from './tx.ts';
import { pgSuppressionStore } from './suppressions.ts';
import { pgTlsReportStore } from './tls-reports.ts';
import type { SuppressionRecord } from '../suppressions.ts';
import type { TlsResultRow } from '../tls-reports.ts';
import { storeKinds } from '../../../test/helpers/stores.ts';

const pg = storeKinds().find((k) => k.name === 'postgres')!;

const rec = (address: string, over: Partial<SuppressionRecord> = {}): SuppressionRecord => ({ address, reason: 'hard-bounce', source: 'bounce', detail: null, createdAt: 1_700_000_000_000, ...over });

/** A fresh migrated database and `n` connections to it, closed by the returned function. */
function nodes(n: number): { url: string; clients: SyncPgClient[]; close: () => void } {
  const url = pg.location();
  const clients = Array.from({ length: n }, () => new SyncPgClient(url));
  migrate(clients[0]!);
  return { url, clients, close: () => clients.forEach((c) => c.close()) };
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Runs `body` (the text of an async function of (tls, suppressions, data))
 * in `threads` threads at once, each with its own connection to `url`;
 * resolves to what each returned. The threads start their work together,
 * released by one shared flag, so their statements overlap.
 */
async function inThreads<T>(url: string, threads: number, body: string, data: (i: number) => unknown): Promise<T[]> {
  const go = new Int32Array(new SharedArrayBuffer(4));
  const modules = { client: './sync-client.ts', tx: './tx.ts', tls: './tls-reports.ts', supp: './suppressions.ts' };
  const urls = Object.fromEntries(Object.entries(modules).map(([k, p]) => [k, new URL(p, import.meta.url).href]));
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    (async () => {
      const { SyncPgClient } = await import(workerData.urls.client);
      const { pgTransaction } = await import(workerData.urls.tx);
      const { pgTlsReportStore } = await import(workerData.urls.tls);
      const { pgSuppressionStore } = await import(workerData.urls.supp);
      const db = new SyncPgClient(workerData.url);
      const tx = pgTransaction(db);
      const tls = pgTlsReportStore(db, tx);
      const suppressions = pgSuppressionStore(db, tx);
      db.query('SELECT 1'); // connected before the start
      parentPort.postMessage({ ready: true });
      Atomics.wait(workerData.go, 0, 0);
      try {
        const out = await (${body})(tls, suppressions, workerData.data);
        parentPort.postMessage({ out });
      } finally {
        db.close();
      }
    })().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));`;
  const workers = Array.from({ length: threads }, (_, i) => new Worker(code, { eval: true, workerData: { url, urls, go, data: data(i) } }));
  try {
    const ready: Promise<void>[] = [];
    const done = workers.map(
      (w) =>
        new Promise<{ out?: T; error?: string }>((resolve) => {
          ready.push(
            new Promise<void>((isReady) => {
              w.on('message', (m: { ready?: true; out?: T; error?: string }) => {
                isReady();
                if (!m.ready) resolve(m);
              });
              w.on('error', (e) => (isReady(), resolve({ error: String(e) })));
            }),
          );
        }),
    );
    await Promise.all(ready);
    // Every thread is connected and waiting: release them at once.
    Atomics.store(go, 0, 1);
    Atomics.notify(go, 0);
    const answers = await Promise.all(done);
    for (const a of answers) if (a.error) assert.fail(a.error);
    return answers.map((a) => a.out as T);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

describe('suppressions shared by several nodes (postgres)', { skip: pg.skip }, () => {
  it("a suppression added on one node moves the other's counter and reaches it by NOTIFY", async () => {
    const { clients, close } = nodes(2);
    try {
      const a = pgSuppressionStore(clients[0]!, pgTransaction(clients[0]!));
      const b = pgSuppressionStore(clients[1]!, pgTransaction(clients[1]!));
      let heardA = 0;
      let heardB = 0;
      a.onChange(() => heardA++);
      const stopB = b.onChange(() => heardB++);
      b.each(() => {});
      assert.equal(b.changedElsewhere(), false);

      a.put(rec('one@x.test'));
      assert.equal(b.changedElsewhere(), true, 'the counter moved');
      await until('the notification on the other node', () => heardB === 1);
      // Our own write notifies us too (a hint, not a verdict): the counter says it was ours.
      await until('the notification on the writing node', () => heardA === 1);
      assert.equal(a.changedElsewhere(), true, 'a never read the list whole');
      a.each(() => {});
      a.addMissing([rec('two@x.test'), rec('three@x.test')]);
      assert.equal(a.changedElsewhere(), false, 'own writes are known');

      const got: string[] = [];
      b.each((r) => got.push(r.address));
      assert.deepEqual(got.toSorted(), ['one@x.test', 'three@x.test', 'two@x.test']);
      assert.equal(b.changedElsewhere(), false);

      // A change made outside Tern (psql) is heard as well: the trigger is on the table.
      clients[0]!.query('DELETE FROM suppressions WHERE address = $1', ['two@x.test']);
      await until('the notification of a psql change', () => heardB === 3);
      assert.equal(b.changedElsewhere(), true);
      assert.equal(a.changedElsewhere(), true);

      stopB();
      a.delete('one@x.test');
      await until('the notification on the writing node', () => heardA === 4);
      assert.equal(heardB, 3, 'stopped');
    } finally {
      close();
    }
  });

  it("a write inside the caller's transaction joins it (the store's tx passed in), and rolls back with it", () => {
    const { clients, close } = nodes(2);
    try {
      const tx = pgTransaction(clients[0]!);
      const s = pgSuppressionStore(clients[0]!, tx);
      const other = pgSuppressionStore(clients[1]!, pgTransaction(clients[1]!));
      s.each(() => {});
      assert.throws(() =>
        tx(() => {
          s.put(rec('rolled@x.test'));
          assert.equal(other.get('rolled@x.test'), null, 'not committed by the put');
          throw new Error('abort');
        }),
      );
      assert.equal(s.get('rolled@x.test'), null);
      // The rollback took the counter back below what this node noted: a needless reload, never a missed one.
      assert.equal(s.changedElsewhere(), true);
      tx(() => s.addMissing([rec('kept@x.test')]));
      assert.notEqual(other.get('kept@x.test'), null);
    } finally {
      close();
    }
  });

  it('writes of two nodes at once: each counted once, and each node knows the other wrote', async () => {
    const { url, clients, close } = nodes(1);
    try {
      const mine = pgSuppressionStore(clients[0]!, pgTransaction(clients[0]!));
      mine.each(() => {});
      const counts = await inThreads<{ added: number; elsewhere: boolean }>(
        url,
        2,
        `async (tls, s, d) => {
          s.each(() => {});
          let added = 0;
          for (let i = 0; i < 60; i++) {
            added += s.addMissing([{ address: 'a' + ((i * 7 + d.k) % 40) + '@x.test', reason: 'r', source: 'bounce', detail: null, createdAt: i }]);
            if (i % 3 === 0) s.put({ address: 'p' + (i % 5) + '@x.test', reason: 'n' + d.k, source: 'api', detail: null, createdAt: i });
          }
          return { added, elsewhere: s.changedElsewhere() };
        }`,
        (k) => ({ k }),
      );
      // 40 addresses a0…a39 between them, each added by exactly one of the two.
      assert.equal(counts[0]!.added + counts[1]!.added, 40);
      assert.equal(mine.count(), 45);
      assert.ok(counts.every((c) => c.elsewhere), "each saw the other's writes");
      assert.equal(mine.changedElsewhere(), true);
    } finally {
      close();
    }
  });
});

const row = (over: Partial<TlsResultRow> = {}): TlsResultRow => ({
  day: '2026-12-06',
  policyDomain: 'example.org',
  policyType: 'sts',
  policyStrings: ['version: STSv1', 'mode: enforce'],
  mxHosts: ['mx.example.org'],
  result: 'success',
  mxHost: '',
  receivingIp: '',
  sendingIp: '',
  count: 1,
  reason: '',
  ...over,
});

describe('TLS-RPT tables shared by several nodes (postgres)', { skip: pg.skip }, () => {
  it("two nodes adding to the same rows: every count lands, sequentially and at once", async () => {
    const { url, clients, close } = nodes(2);
    try {
      const a = pgTlsReportStore(clients[0]!, pgTransaction(clients[0]!));
      const b = pgTlsReportStore(clients[1]!, pgTransaction(clients[1]!));
      a.addResults([row({ count: 2 })]);
      b.addResults([row({ count: 3 }), row({ result: 'sts-webpki-invalid', mxHost: 'mx.example.org', receivingIp: '192.0.2.1', count: 1, reason: 'b' })]);
      a.addResults([row({ result: 'sts-webpki-invalid', mxHost: 'mx.example.org', receivingIp: '192.0.2.1', count: 1, reason: '' })]);
      assert.deepEqual(
        b.results('2026-12-06', 'example.org').map((r) => [r.result, r.count, r.reason]),
        [
          ['sts-webpki-invalid', 2, 'b'],
          ['success', 5, ''],
        ],
      );

      // Two threads, 100 batches each over the same 30 rows in different orders.
      const rounds = 100;
      await inThreads<null>(
        url,
        2,
        `async (tls, s, d) => {
          const keys = Array.from({ length: 30 }, (_, i) => i);
          for (let r = 0; r < ${rounds}; r++) {
            const order = d.k === 0 ? keys : keys.toReversed();
            tls.addResults(order.map((i) => ({ day: '2026-12-07', policyDomain: 'd' + (i % 3) + '.test', policyType: 'sts', policyStrings: [], mxHosts: [],
              result: 'success', mxHost: 'mx' + i, receivingIp: '', sendingIp: '', count: 1 + d.k, reason: '' })));
          }
          return null;
        }`,
        (k) => ({ k }),
      );
      for (const d of ['d0.test', 'd1.test', 'd2.test']) {
        const rows = a.results('2026-12-07', d);
        assert.equal(rows.length, 10);
        // One thread added 1 per round, the other 2.
        assert.ok(rows.every((r) => r.count === rounds * 3), JSON.stringify(rows.map((r) => r.count)));
      }
    } finally {
      close();
    }
  });

  it('claimReport: a new report is claimed once; a pending one again only after the lease; a finished one never', () => {
    const { clients, close } = nodes(2);
    try {
      const a = pgTlsReportStore(clients[0]!, pgTransaction(clients[0]!));
      const b = pgTlsReportStore(clients[1]!, pgTransaction(clients[1]!));
      const day = '2026-12-06';
      const lease = 600_000;
      const t = 1_765_000_000_000;
      assert.deepEqual(a.claimReport(day, 'x.test', 'id-a', t, t - lease), { day, policyDomain: 'x.test', reportId: 'id-a', state: 'pending', attempts: 1, delivered: [], updatedAt: t });
      assert.equal(b.claimReport(day, 'x.test', 'id-b', t + 1000, t + 1000 - lease), null, 'a holds it');
      // a saves progress: the lease runs from then.
      a.putReport({ day, policyDomain: 'x.test', reportId: 'id-a', state: 'pending', attempts: 1, delivered: ['mailto:r@x.test'], updatedAt: t + 5000 });
      assert.equal(b.claimReport(day, 'x.test', 'id-b', t + lease + 1000, t + 1000), null, 'a wrote since');
      // a died or gave up this run: after the lease, b takes over, with a's report id and deliveries.
      assert.deepEqual(b.claimReport(day, 'x.test', 'id-b', t + lease + 6000, t + 6000), {
        day,
        policyDomain: 'x.test',
        reportId: 'id-a',
        state: 'pending',
        attempts: 2,
        delivered: ['mailto:r@x.test'],
        updatedAt: t + lease + 6000,
      });
      b.putReport({ ...b.report(day, 'x.test')!, state: 'sent' });
      assert.equal(a.claimReport(day, 'x.test', 'id-a', t + 10 * lease, t + 9 * lease), null, 'sent');
      assert.deepEqual(a.unreported(day), []);
    } finally {
      close();
    }
  });

  it('claimReport at once on two nodes: each report goes to exactly one', async () => {
    const { url, clients, close } = nodes(1);
    try {
      const domains = Array.from({ length: 60 }, (_, i) => `d${i}.test`);
      const won = await inThreads<string[]>(
        url,
        2,
        `async (tls, s, d) => {
          const won = [];
          const order = d.k === 0 ? d.domains : d.domains.toReversed();
          for (const domain of order) if (tls.claimReport('2026-12-06', domain, 'id-' + d.k, 1000, 0)) won.push(domain);
          return won;
        }`,
        (k) => ({ k, domains }),
      );
      assert.deepEqual([...won[0]!, ...won[1]!].toSorted(), domains.toSorted());
      const check = pgTlsReportStore(clients[0]!, pgTransaction(clients[0]!));
      for (const d of domains) assert.equal(check.report('2026-12-06', d)!.attempts, 1, d);
    } finally {
      close();
    }
  });
});

describe('byte order whatever the database collation (postgres)', { skip: pg.skip }, () => {
  it('page and unreported sort as SQLite does in a database with an ICU natural-language collation', (t) => {
    const { clients, close } = nodes(1);
    const name = `icu_${process.pid}_${Date.now()}`;
    try {
      try {
        clients[0]!.exec(`CREATE DATABASE ${name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`);
      } catch (e) {
        t.skip(`no ICU collation in this PostgreSQL: ${String(e)}`);
        return;
      }
      const port = clients[0]!.one<{ p: number }>('SELECT inet_server_port() AS p')!.p;
      const user = clients[0]!.one<{ u: string }>('SELECT current_user AS u')!.u;
      const db = new SyncPgClient(`postgres://${user}@127.0.0.1:${port}/${name}`);
      try {
        migrate(db);
        // The collation does differ from byte order here, or the test proves nothing.
        assert.equal(db.one<{ lt: boolean }>(`SELECT 'é' < 'f' AND 'a_' < 'a1' AS lt`)!.lt, true);
        const s = pgSuppressionStore(db);
        const all = ['f@x.test', 'é@x.test', 'a-z@x.test', 'a.b@x.test', 'ab@x.test', 'a_b@x.test', 'a1@x.test'];
        s.addMissing(all.map((a) => rec(a)));
        const bytes = all.toSorted((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
        assert.deepEqual(s.page('', 100).map((r) => r.address), bytes);
        assert.deepEqual(s.page('a1@x.test', 2).map((r) => r.address), bytes.slice(bytes.indexOf('a1@x.test') + 1).slice(0, 2));
        const tls = pgTlsReportStore(db, pgTransaction(db));
        tls.addResults(['a_b.test', 'a1.test', 'xn--e-9fa.test', 'f.test'].map((policyDomain) => row({ policyDomain })));
        assert.deepEqual(tls.unreported('2026-12-06'), ['a1.test', 'a_b.test', 'f.test', 'xn--e-9fa.test']);
      } finally {
        db.close();
      }
    } finally {
      close();
    }
  });
});
