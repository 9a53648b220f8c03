// The events store: the recorder writes what the stream emits, with the
// sender for scoping (send-as addresses, plus-tags and @domains, as
// mayUseAddress reads them); retention deletes old events in bounded batches.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EventStream, eventIdFloor } from '../events/events.ts';
import { openStore, type Store } from '../store/store.ts';
import { storeKinds } from '../../test/helpers/stores.ts';
import { SyncPgClient } from '../store/pg/sync-client.ts';
import { silentLogger } from '../util/log.ts';
import type { QueuedMessage } from '../spool/types.ts';
import { EventRecorder, RETENTION_BATCH } from './events-store.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-events-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function message(id: string, sender: string, rcpts: string[]): QueuedMessage {
  return {
    envelope: { id, sender, recipients: rcpts.map((a) => ({ address: a, original: a })), receivedAt: Date.now(), smtputf8: false, source: 'api' },
  } as unknown as QueuedMessage;
}

for (const kind of storeKinds()) describe(`events store (${kind.name})`, { skip: kind.skip }, () => {
  let store: Store;
  let recorder: EventRecorder;
  const stream = new EventStream();
  before(() => {
    store = kind.open();
    recorder = new EventRecorder({ events: stream, store, retentionMs: 60_000, log: silentLogger });
  });
  after(async () => {
    await recorder.close();
    store.close();
  });

  it('records every event with its sender and scopes reads by send-as', async () => {
    const mine = message('Q1', 'Alice+news@Tern.test', ['x@remote.test', 'y@remote.test']);
    const theirs = message('Q2', 'bob@other.test', ['z@remote.test']);
    stream.emit('queued', mine, 0);
    stream.emit('queued', mine, 1);
    stream.emit('queued', theirs, 0);
    stream.emit('delivered', mine, 0, 1, { reply: { code: 250, enhanced: '2.0.0', text: 'ok' }, relay: null, tls: null }, 'mx');
    await recorder.drain();
    const ids = (scope: Parameters<typeof store.queryEvents>[0]['scope']) => store.queryEvents({ after: '', limit: 100, scope }).map((e) => `${e.queueId}:${e.type}:${e.recipient}`);
    assert.deepEqual(ids({ admin: true }), ['Q1:queued:x@remote.test', 'Q1:queued:y@remote.test', 'Q2:queued:z@remote.test', 'Q1:delivered:x@remote.test']);
    // The plain address covers its plus-tagged form, case-insensitively.
    assert.deepEqual(ids({ admin: false, sendAs: ['alice@tern.test'] }), ['Q1:queued:x@remote.test', 'Q1:queued:y@remote.test', 'Q1:delivered:x@remote.test']);
    assert.deepEqual(ids({ admin: false, sendAs: ['@other.test'] }), ['Q2:queued:z@remote.test']);
    assert.deepEqual(ids({ admin: false, sendAs: [] }), []);
    assert.equal(store.messageEvents('Q2', { admin: false, sendAs: ['alice@tern.test'] }), null);
    const found = store.messageEvents('Q1', { admin: false, sendAs: ['@tern.test'] });
    assert.equal(found?.message.sender, 'alice+news@tern.test');
    assert.equal(found?.events.length, 3);
    const byType = store.queryEvents({ after: '', limit: 100, type: 'delivered', recipient: 'X@remote.test', scope: { admin: true } });
    assert.equal(byType.length, 1);
  });

  it('deletes events older than the retention in bounded batches, newer ones stay', async () => {
    const old = Date.now() - 3_600_000;
    const n = RETENTION_BATCH * 2 + 17;
    const batch = Array.from({ length: n }, (_, i) => ({
      // Ids of an hour ago: the time prefix is what retention compares.
      event: { id: `${eventIdFloor(old)}${String(i).padStart(10, '0')}`, type: 'queued' as const, timestamp: new Date(old).toISOString(), queueId: `OLD${i}`, recipient: 'r@remote.test', data: { attempt: null, relay: null, tls: null, reply: null, bounceClass: null, source: 'api' as const, tags: null, transport: null } },
      sender: 'alice@tern.test',
    }));
    store.addEvents(batch);
    assert.equal(store.expireEvents(Date.now() - 60_000, 5), 5, 'one statement deletes at most max rows');
    assert.equal(await recorder.expire(), n - 5);
    const left = store.queryEvents({ after: '', limit: 1000, scope: { admin: true } });
    assert.deepEqual(left.map((e) => e.queueId).sort(), ['Q1', 'Q1', 'Q1', 'Q2']);
    assert.equal(store.messageEvents('OLD3', { admin: true }), null);
  });

  it('commitAsync only where the store is shared (PostgreSQL); the embedded store commits synchronously', () => {
    assert.equal(typeof store.commitAsync === 'function', kind.name === 'postgres');
  });

  it('PostgreSQL: a batch stuck in the database does not hold up the event loop or other store calls; drain() waits for it', { skip: kind.name !== 'postgres' }, async () => {
    const at = kind.location();
    const own = kind.openAt(at);
    const ownStream = new EventStream();
    const rec = new EventRecorder({ events: ownStream, store: own, retentionMs: 60_000, log: silentLogger, flushMs: 1 });
    // Another session holds a lock that lets reads through but makes the batch's INSERT wait.
    const locker = new SyncPgClient(at);
    try {
      locker.exec('BEGIN; LOCK TABLE events IN EXCLUSIVE MODE');
      const m = message('QL1', 'alice@tern.test', ['a@remote.test', 'b@remote.test']);
      ownStream.emit('queued', m, 0);
      ownStream.emit('queued', m, 1);
      let drained = false;
      const draining = rec.drain().then(() => (drained = true));
      const started = Date.now();
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(Date.now() - started < 1000, 'timers ran on time while the batch waited');
      assert.equal(drained, false, 'the batch is still waiting for the lock');
      assert.equal(own.queryEvents({ after: '', limit: 10, scope: { admin: true } }).length, 0, 'a read meanwhile is answered (and sees nothing yet)');
      locker.exec('COMMIT');
      await draining;
      assert.deepEqual(own.queryEvents({ after: '', limit: 10, scope: { admin: true } }).map((e) => e.recipient), ['a@remote.test', 'b@remote.test']);
    } finally {
      locker.close();
      await rec.close();
      own.close();
    }
  });
});

describe('events store unavailable for a while', () => {
  for (const mode of ['transaction', 'commitAsync'] as const) {
    it(`keeps the events of failed writes and writes them, in order, once the store takes them again (${mode})`, async () => {
      const store = openStore(path.join(dir, `flaky-${mode}`));
      let failing = true;
      const flaky = {
        addEvents: (b: Parameters<typeof store.addEvents>[0]) => store.addEvents(b),
        expireEvents: (before: number, max: number) => store.expireEvents(before, max),
        ...(mode === 'transaction'
          ? {
              transaction: <T>(fn: () => T): T => {
                if (failing) throw new Error('PostgreSQL unavailable');
                return store.transaction(fn);
              },
            }
          : {
              transaction: () => assert.fail('commitAsync is used when the store has it'),
              // Committed a little later, as PostgreSQL's worker does.
              commitAsync: <T>(fn: () => T): Promise<T> =>
                failing ? Promise.reject(new Error('PostgreSQL unavailable')) : new Promise((resolve) => setTimeout(() => resolve(store.transaction(fn)), 5)),
            }),
      } as unknown as typeof store;
      const stream = new EventStream();
      const recorder = new EventRecorder({ events: stream, store: flaky, retentionMs: 60_000, log: silentLogger, flushMs: 1 });
      try {
        const m = message('QF1', 'alice@tern.test', ['a@remote.test', 'b@remote.test']);
        stream.emit('queued', m, 0);
        await recorder.drain();
        stream.emit('queued', m, 1);
        await recorder.drain();
        assert.equal(store.queryEvents({ after: '', limit: 10, scope: { admin: true } }).length, 0, 'nothing written while it fails');
        failing = false;
        // No new event: the retry timer writes what was held.
        await new Promise((r) => setTimeout(r, 1300));
        await recorder.drain();
        assert.deepEqual(
          store.queryEvents({ after: '', limit: 10, scope: { admin: true } }).map((e) => e.recipient),
          ['a@remote.test', 'b@remote.test'],
        );
      } finally {
        await recorder.close();
        store.close();
      }
    });
  }
});
