import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PgError, SyncPgClient } from './sync-client.ts';
import { pgTransaction } from './tx.ts';
import { requirePostgres, startPostgres, type PgCluster } from '../../../test/helpers/postgres.ts';

const skip = requirePostgres();

describe('SyncPgClient: PostgreSQL behind a synchronous interface', { skip }, () => {
  let cluster: PgCluster;
  let url: string;
  before(async () => {
    cluster = await startPostgres();
    url = await cluster.createDatabase('sync_client');
  });
  after(async () => {
    await cluster?.destroy();
  });

  it('answers queries synchronously, with numbers for int8 and the SQLSTATE of an error', () => {
    const db = new SyncPgClient(url);
    try {
      db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL)');
      assert.equal(db.query('INSERT INTO t VALUES ($1, $2), ($3, $4)', ['a', 1, 'b', 2 ** 40]).rowCount, 2);
      assert.deepEqual(db.rows('SELECT k, n FROM t ORDER BY k'), [{ k: 'a', n: 1 }, { k: 'b', n: 2 ** 40 }]);
      assert.deepEqual(db.one<{ c: number }>('SELECT COUNT(*) AS c FROM t'), { c: 2 });
      assert.throws(() => db.query('INSERT INTO t VALUES ($1, 3)', ['a']), (e: unknown) => e instanceof PgError && e.code === '23505');
      // The connection is still good after an error.
      assert.equal(db.one<{ n: number }>('SELECT n FROM t WHERE k = $1', ['b'])!.n, 2 ** 40);
    } finally {
      db.close();
    }
  });

  it('capture + batchAsync: deferred writes go out as one transaction on their own connection; reads inside capture are answered at once, outside it; a failure rolls the batch back', async () => {
    const db = new SyncPgClient(url);
    try {
      db.exec('CREATE TABLE ab (n INT PRIMARY KEY)');
      const { out, items } = db.capture(() => {
        db.defer('INSERT INTO ab VALUES (1)');
        db.defer('INSERT INTO ab VALUES (2)');
        // Answered now, without the deferred writes (they are not sent yet).
        return db.one<{ c: number }>('SELECT COUNT(*) AS c FROM ab')!.c;
      });
      assert.equal(out, 0);
      assert.equal(items.length, 2);
      assert.equal(db.one<{ c: number }>('SELECT COUNT(*) AS c FROM ab')!.c, 0, 'captured writes wait for batchAsync');
      const done = db.batchAsync([{ sql: 'BEGIN', params: [] }, ...items, { sql: 'COMMIT', params: [] }]);
      assert.equal((await done).command, 'COMMIT');
      assert.equal(db.one<{ c: number }>('SELECT COUNT(*) AS c FROM ab')!.c, 2);
      // The second INSERT collides: the worker rolls the whole batch back, and says why.
      await assert.rejects(
        db.batchAsync([{ sql: 'BEGIN', params: [] }, { sql: 'INSERT INTO ab VALUES (3)', params: [] }, { sql: 'INSERT INTO ab VALUES (1)', params: [] }, { sql: 'COMMIT', params: [] }]),
        (e: unknown) => e instanceof PgError && e.code === '23505',
      );
      assert.deepEqual(db.rows('SELECT n FROM ab ORDER BY n'), [{ n: 1 }, { n: 2 }], 'nothing of the failed batch');
      // The connection for batches is usable again afterwards.
      await db.batchAsync([{ sql: 'INSERT INTO ab VALUES (4)', params: [] }]);
      assert.equal(db.one<{ c: number }>('SELECT COUNT(*) AS c FROM ab')!.c, 3);
      assert.throws(() => db.capture(() => db.capture(() => 0)), /capture\(\) inside/);
    } finally {
      db.close();
    }
  });

  it('a transaction is a plain sequence of calls: nothing of this process interleaves', () => {
    const db = new SyncPgClient(url);
    try {
      db.exec('CREATE TABLE tx (n INT)');
      let timerRan = false;
      setImmediate(() => (timerRan = true));
      db.exec('BEGIN');
      db.query('INSERT INTO tx VALUES (1)');
      db.exec('ROLLBACK');
      assert.equal(timerRan, false, 'the event loop did not turn in between');
      assert.equal(db.one<{ c: number }>('SELECT COUNT(*) AS c FROM tx')!.c, 0);
    } finally {
      db.close();
    }
  });

  it('a transaction whose statement failed (even if caught) does not pass as committed', () => {
    const db = new SyncPgClient(url);
    try {
      db.exec('CREATE TABLE tx2 (n INT PRIMARY KEY)');
      const tx = pgTransaction(db);
      assert.throws(
        () =>
          tx(() => {
            db.query('INSERT INTO tx2 VALUES (1)');
            try {
              db.query('INSERT INTO tx2 VALUES (1)');
            } catch {
              // swallowed by mistake
            }
          }),
        (e: unknown) => e instanceof PgError && e.code === '25P02',
      );
      assert.equal(db.one<{ c: number }>('SELECT COUNT(*) AS c FROM tx2')!.c, 0, 'nothing was written');
      assert.equal(tx(() => db.query('INSERT INTO tx2 VALUES (2)').rowCount), 1, 'the connection is usable after');
    } finally {
      db.close();
    }
  });

  it('NOTIFY reaches listen() of another client', async () => {
    const a = new SyncPgClient(url);
    const b = new SyncPgClient(url);
    try {
      const got: string[] = [];
      a.listen('tern_test', (p) => got.push(p));
      b.query("SELECT pg_notify('tern_test', 'hello')");
      const t0 = Date.now();
      while (got.length === 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(got, ['hello']);
    } finally {
      a.close();
      b.close();
    }
  });

  it('a server that is gone: the call throws in time, later calls fail at once for a moment, and it works again once it is back', async () => {
    let now = 0;
    const db = new SyncPgClient(url, { timeoutMs: 5000, connectTimeoutMs: 2000, retryAfterMs: 2000, now: () => now });
    try {
      assert.equal(db.one<{ x: number }>('SELECT 1 AS x')!.x, 1);
      await cluster.stop();
      const t0 = performance.now();
      assert.throws(() => db.one('SELECT 1 AS x'), PgError);
      assert.ok(performance.now() - t0 < 5500, 'bounded by the timeouts');
      assert.equal(db.unavailable, true);
      const t1 = performance.now();
      assert.throws(() => db.one('SELECT 1 AS x'), (e: unknown) => e instanceof PgError && e.code === 'TERN_UNAVAILABLE');
      assert.ok(performance.now() - t1 < 50, 'failing fast: the event loop is not held');
      await cluster.start();
      now += 2001;
      assert.equal(db.one<{ x: number }>('SELECT 2 AS x')!.x, 2);
      assert.equal(db.unavailable, false);
    } finally {
      db.close();
    }
  });
});
