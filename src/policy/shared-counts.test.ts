import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BUCKET_MS, SharedCounts, type SharedCountTable } from './shared-counts.ts';
import { SendRate } from './rate-limit.ts';
import { AuthThrottle } from './auth-throttle.ts';
import { RateCheck } from './rate.ts';
import type { SessionInfo } from './policy.ts';
import { silentLogger } from '../util/log.ts';

/** An in-memory shared table, as PostgreSQL's (src/store/pg/shared-counts.ts) behaves. */
function memoryTable(): SharedCountTable & { rows: Map<string, number>; failing: boolean } {
  const rows = new Map<string, number>();
  const t = {
    rows,
    failing: false,
    add(node: string, list: { key: string; bucket: number; n: number }[]) {
      if (t.failing) throw new Error('store away');
      for (const r of list) rows.set(`${r.key}|${r.bucket}|${node}`, (rows.get(`${r.key}|${r.bucket}|${node}`) ?? 0) + r.n);
    },
    others(node: string, keys: string[], fromBucket: number) {
      if (t.failing) throw new Error('store away');
      const out = new Map<string, number>();
      for (const [k, n] of rows) {
        const [key, bucket, who] = k.split('|');
        if (keys.includes(key!) && Number(bucket) >= fromBucket && who !== node) out.set(key!, (out.get(key!) ?? 0) + n);
      }
      return out;
    },
    reset(keys: string[]) {
      for (const k of [...rows.keys()]) if (keys.includes(k.split('|')[0]!)) rows.delete(k);
    },
    expire(bucket: number) {
      for (const k of [...rows.keys()]) if (Number(k.split('|')[1]) < bucket) rows.delete(k);
    },
  };
  return t;
}

describe('SharedCounts: limits that hold across nodes', () => {
  it('each node sees what the others counted after a sync, never its own twice', () => {
    const table = memoryTable();
    let now = 10 * BUCKET_MS;
    const a = new SharedCounts(table, { node: 'a', log: silentLogger, now: () => now, syncMs: 1e9 });
    const b = new SharedCounts(table, { node: 'b', log: silentLogger, now: () => now, syncMs: 1e9 });
    try {
      assert.equal(b.others('send:u', 3_600_000), 0, 'unknown until followed and synced');
      a.add('send:u', 3);
      a.sync();
      b.sync();
      assert.equal(b.others('send:u', 3_600_000), 3);
      assert.equal(a.others('send:u', 3_600_000), 0, 'its own are not "others"');
      now += 2 * 3_600_000;
      b.sync();
      assert.equal(b.others('send:u', 3_600_000), 0, 'out of the window');
    } finally {
      a.close();
      b.close();
    }
  });

  it('a store that is away keeps the counts until it is back; reset forgets a key everywhere', () => {
    const table = memoryTable();
    const a = new SharedCounts(table, { node: 'a', log: silentLogger, syncMs: 1e9 });
    const b = new SharedCounts(table, { node: 'b', log: silentLogger, syncMs: 1e9 });
    try {
      b.others('auth:a:x', 900_000);
      table.failing = true;
      a.add('auth:a:x', 2);
      a.sync();
      table.failing = false;
      a.sync();
      b.sync();
      assert.equal(b.others('auth:a:x', 900_000), 2, 'nothing lost while it was away');
      a.reset('auth:a:x');
      a.sync();
      b.sync();
      assert.equal(b.others('auth:a:x', 900_000), 0);
    } finally {
      a.close();
      b.close();
    }
  });

  it('SendRate and AuthThrottle add the other nodes\' counts', () => {
    const table = memoryTable();
    const ca = new SharedCounts(table, { node: 'a', log: silentLogger, syncMs: 1e9 });
    const cb = new SharedCounts(table, { node: 'b', log: silentLogger, syncMs: 1e9 });
    try {
      const rateA = new SendRate(Date.now, ca);
      const rateB = new SendRate(Date.now, cb);
      rateB.count('alice@tern.test');
      rateA.record('alice@tern.test');
      rateA.record('alice@tern.test');
      rateA.unrecord('alice@tern.test');
      ca.sync();
      cb.sync();
      assert.equal(rateB.count('alice@tern.test'), 1, 'one sent through A (one taken back)');
      rateB.record('alice@tern.test');
      assert.equal(rateB.count('alice@tern.test'), 2);

      const tA = new AuthThrottle({ shared: ca, lockoutAfter: 3 });
      const tB = new AuthThrottle({ shared: cb, lockoutAfter: 3 });
      tB.check('192.0.2.9', 'bob@tern.test');
      for (let i = 0; i < 3; i++) tA.failure('192.0.2.9', 'bob@tern.test');
      ca.sync();
      cb.sync();
      assert.equal(tB.check('192.0.2.9', 'bob@tern.test').locked, true, 'locked out on B by failures on A');
      tA.success('192.0.2.9', 'bob@tern.test');
      ca.sync();
      cb.sync();
      assert.equal(tB.check('198.51.100.1', 'bob@tern.test').locked, false, 'the account is cleared on every node');
    } finally {
      ca.close();
      cb.close();
    }
  });

  it('the per-client connection rate counts the other nodes\' connections', () => {
    const table = memoryTable();
    const ca = new SharedCounts(table, { node: 'a', log: silentLogger, syncMs: 1e9 });
    const cb = new SharedCounts(table, { node: 'b', log: silentLogger, syncMs: 1e9 });
    try {
      const opts = { connectionsPerMinute: 3, messagesPerHour: 0, isTrusted: () => false };
      const onA = new RateCheck({ ...opts, shared: ca });
      const onB = new RateCheck({ ...opts, shared: cb });
      const s = { role: 'smtp', remoteAddress: '192.0.2.7' } as SessionInfo;
      onB.connect(s);
      onA.connect(s);
      onA.connect(s);
      ca.sync();
      cb.sync();
      // B saw one itself; A's two arrive with the exchange: the fourth is over the limit of 3.
      assert.throws(() => onB.connect(s), /421|Too many connections/);
    } finally {
      ca.close();
      cb.close();
    }
  });
});
