// The store's behaviour, once per implementation (issue 17: the embedded
// node:sqlite store and PostgreSQL give the same answers): users, greylist,
// API keys, events and messages with scoped reads, transactions and
// Idempotency-Key entries. What is about the SQLite file itself (its mode,
// WAL, its schema history) is at the end; the PostgreSQL schema's own tests
// are in pg/store.test.ts.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { eventIdFloor, type EventType, type MessageEvent } from '../events/events.ts';
import { storeKinds } from '../../test/helpers/stores.ts';
import { openStore, RARE_TYPES, rareType, SCHEMA_VERSION, STORE_FILE, type Store, type StoredEvent, type UserRecord } from './store.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-store-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => path.join(root, `d${n++}`);

const alice: UserRecord = { address: 'alice@tern.test', passwordHash: '$scrypt$x', sendAs: ['@tern.test'], messagesPerHour: 100, createdAt: 1_700_000_000_000 };
const bob: UserRecord = { address: 'Bob@Tern.test', passwordHash: '$scrypt$y', sendAs: [], recipientsPerMessage: 5, createdAt: 1_700_000_000_001 };

const T0 = 1_700_000_000_000;

/** An event of millisecond `ms`; `seq` orders events of the same millisecond. */
function event(ms: number, seq: number, queueId: string, type: EventType, recipient: string): MessageEvent {
  return {
    id: `${eventIdFloor(ms)}${String(seq).padStart(4, '0')}tag000`,
    type,
    timestamp: new Date(ms).toISOString(),
    queueId,
    recipient,
    data: { attempt: null, relay: null, tls: null, reply: null, bounceClass: null, source: 'api', tags: null, transport: null },
  };
}

const stored = (e: MessageEvent, sender: string, more: Partial<StoredEvent> = {}): StoredEvent => ({ event: e, sender, ...more });

/** A store that is closed after `fn`, whatever happens. */
function using(store: Store, fn: (s: Store) => void): void {
  try {
    fn(store);
  } finally {
    store.close();
  }
}

for (const kind of storeKinds()) {
  describe(`store (${kind.name})`, { skip: kind.skip }, () => {
    it('CRUD: put, get (case-insensitive), replace, list sorted, delete', () => {
      using(kind.open(), (store) => {
        assert.equal(store.getUser('alice@tern.test'), null);
        store.putUser(alice);
        store.putUser(bob);
        assert.deepEqual(store.getUser('ALICE@tern.test'), { ...alice, recipientsPerMessage: undefined, admin: undefined });
        assert.deepEqual(store.getUser('bob@tern.test'), { ...bob, address: 'bob@tern.test', messagesPerHour: undefined, admin: undefined });
        store.putUser({ ...alice, passwordHash: '$scrypt$z', sendAs: [] });
        assert.equal(store.getUser('alice@tern.test')!.passwordHash, '$scrypt$z');
        assert.deepEqual(store.getUser('alice@tern.test')!.sendAs, []);
        assert.deepEqual(store.listUsers().map((u) => u.address), ['alice@tern.test', 'bob@tern.test']);
        assert.equal(store.deleteUser('BOB@tern.test'), true);
        assert.equal(store.deleteUser('bob@tern.test'), false);
        assert.deepEqual(store.listUsers().map((u) => u.address), ['alice@tern.test']);
      });
    });

    it('users: admin flag, zero limits kept, listed in byte order', () => {
      using(kind.open(), (store) => {
        store.putUser({ ...alice, admin: true, messagesPerHour: 0, recipientsPerMessage: 0 });
        assert.deepEqual(store.getUser('alice@tern.test'), { ...alice, admin: true, messagesPerHour: 0, recipientsPerMessage: 0 });
        store.putUser({ ...alice, admin: false });
        assert.equal(store.getUser('alice@tern.test')!.admin, undefined);
        // Byte order ('-' < '.' < '@' < 'a'), not a locale's, which would ignore the punctuation.
        for (const address of ['a.b@x.test', 'ab@x.test', 'a-c@x.test', 'a@x.test']) store.putUser({ ...bob, address });
        assert.deepEqual(store.listUsers().map((u) => u.address), ['a-c@x.test', 'a.b@x.test', 'a@x.test', 'ab@x.test', 'alice@tern.test']);
      });
    });

    it('persists across reopen; close twice is harmless', () => {
      const where = kind.location();
      const a = kind.openAt(where);
      a.putUser(alice);
      a.close();
      a.close(); // idempotent
      using(kind.openAt(where), (b) => assert.equal(b.getUser('alice@tern.test')!.messagesPerHour, 100));
    });

    it('two handles at once (server + CLI, or two nodes) see each other’s writes', () => {
      const where = kind.location();
      const server = kind.openAt(where);
      const cli = kind.openAt(where);
      try {
        cli.putUser(alice);
        assert.equal(server.getUser('alice@tern.test')!.address, 'alice@tern.test');
        server.putUser(bob);
        assert.equal(cli.listUsers().length, 2);
        assert.equal(cli.deleteUser('alice@tern.test'), true);
        assert.equal(server.getUser('alice@tern.test'), null);
      } finally {
        server.close();
        cli.close();
      }
    });

    it('greylist entries: put, get, replace, expire', () => {
      using(kind.open(), (store) => {
        assert.equal(store.getGreylist('192.0.2.0/24 a@x.test b@y.test'), null);
        store.putGreylist('t1', { firstSeen: 1000, passedAt: null, expires: 5000 });
        store.putGreylist('t2', { firstSeen: 1000, passedAt: 2000, expires: 9000 });
        assert.deepEqual(store.getGreylist('t1'), { firstSeen: 1000, passedAt: null, expires: 5000 });
        store.putGreylist('t1', { firstSeen: 1000, passedAt: 3000, expires: 8000 });
        assert.deepEqual(store.getGreylist('t1'), { firstSeen: 1000, passedAt: 3000, expires: 8000 });
        assert.equal(store.expireGreylist(8500), 1);
        assert.equal(store.getGreylist('t1'), null);
        assert.notEqual(store.getGreylist('t2'), null);
        // Replacing a passed entry with a new round clears passedAt.
        store.putGreylist('t2', { firstSeen: 9500, passedAt: null, expires: 12000 });
        assert.deepEqual(store.getGreylist('t2'), { firstSeen: 9500, passedAt: null, expires: 12000 });
      });
    });

    it('API keys: add (a taken name or hash is refused), by hash, sorted by name, revoke', () => {
      using(kind.open(), (store) => {
        const key = { name: 'ci', hash: 'h1', sendAs: ['@tern.test'], admin: false, createdAt: T0 };
        assert.equal(store.addApiKey(key), true);
        assert.equal(store.addApiKey({ ...key, hash: 'h2' }), false, 'name taken');
        assert.equal(store.addApiKey({ ...key, name: 'other' }), false, 'hash taken');
        assert.equal(store.addApiKey({ name: 'Admin', hash: 'h3', sendAs: [], admin: true, messagesPerHour: 0, createdAt: T0 + 1 }), true);
        assert.equal(store.addApiKey({ name: 'b.x', hash: 'h4', sendAs: ['a@tern.test'], admin: false, messagesPerHour: 50, createdAt: T0 + 2 }), true);
        assert.deepEqual(store.apiKeyByHash('h1'), { ...key, messagesPerHour: undefined });
        assert.deepEqual(store.apiKeyByHash('h3'), { name: 'Admin', hash: 'h3', sendAs: [], admin: true, messagesPerHour: 0, createdAt: T0 + 1 });
        assert.equal(store.apiKeyByHash('nope'), null);
        assert.deepEqual(store.listApiKeys().map((k) => k.name), ['Admin', 'b.x', 'ci']);
        assert.equal(store.listApiKeys()[1]!.messagesPerHour, 50);
        assert.equal(store.revokeApiKey('ci'), true);
        assert.equal(store.revokeApiKey('ci'), false);
        assert.equal(store.apiKeyByHash('h1'), null);
        // The name is free again, the hash too.
        assert.equal(store.addApiKey(key), true);
      });
    });

    it('events: filters, the after cursor, limits, recipients compared lower-cased', () => {
      using(kind.open(), (store) => {
        store.addEvents([
          stored(event(T0, 0, 'Q1', 'queued', 'X@Remote.test'), 'a@tern.test'),
          stored(event(T0, 1, 'Q1', 'queued', 'y@remote.test'), 'a@tern.test'),
          stored(event(T0 + 5, 0, 'Q2', 'queued', 'z@remote.test'), 'b@tern.test'),
        ]);
        store.addEvents([stored(event(T0 + 10, 0, 'Q1', 'delivered', 'x@remote.test'), 'a@tern.test')]);
        const all = store.queryEvents({ after: '', limit: 100, scope: { admin: true } });
        assert.deepEqual(all.map((e) => `${e.queueId}:${e.type}:${e.recipient}`), ['Q1:queued:X@Remote.test', 'Q1:queued:y@remote.test', 'Q2:queued:z@remote.test', 'Q1:delivered:x@remote.test']);
        // The event comes back as it was written, recipient case and all.
        assert.deepEqual(all[0], event(T0, 0, 'Q1', 'queued', 'X@Remote.test'));
        const page1 = store.queryEvents({ after: '', limit: 2, scope: { admin: true } });
        const page2 = store.queryEvents({ after: page1[1]!.id, limit: 2, scope: { admin: true } });
        const page3 = store.queryEvents({ after: page2[1]!.id, limit: 2, scope: { admin: true } });
        assert.deepEqual([...page1, ...page2].map((e) => e.id), all.map((e) => e.id));
        assert.deepEqual(page3, []);
        // A time cursor (eventIdFloor) starts at that millisecond.
        assert.deepEqual(store.queryEvents({ after: eventIdFloor(T0 + 5), limit: 10, scope: { admin: true } }).map((e) => e.queueId), ['Q2', 'Q1']);
        assert.deepEqual(store.queryEvents({ after: '', limit: 10, type: 'delivered', scope: { admin: true } }).map((e) => e.id), [all[3]!.id]);
        assert.deepEqual(store.queryEvents({ after: '', limit: 10, recipient: 'x@REMOTE.test', scope: { admin: true } }).map((e) => e.id), [all[0]!.id, all[3]!.id]);
        assert.deepEqual(store.queryEvents({ after: '', limit: 10, type: 'queued', recipient: 'x@remote.test', scope: { admin: false, sendAs: ['a@tern.test'] } }).map((e) => e.id), [all[0]!.id]);
        assert.deepEqual(store.queryEvents({ after: '', limit: 10, type: 'bounced', scope: { admin: true } }), []);
        // An event written twice stays the first.
        store.addEvents([stored({ ...event(T0, 0, 'Q1', 'queued', 'X@Remote.test'), recipient: 'changed@remote.test' }, 'a@tern.test')]);
        assert.equal(store.queryEvents({ after: '', limit: 1, scope: { admin: true } })[0]!.recipient, 'X@Remote.test');
      });
    });

    it('events: a scoped read pages the same whether the walk in id order fills the page or the sender indexes finish it', () => {
      using(kind.open(), (store) => {
        // 30 messages, two events each; a sender's share decides which way a page is read (SCOPED_WALK_ROWS).
        const senders = (i: number): string => (i % 10 === 0 ? 'rare@rare.test' : i % 3 === 0 ? 'mid@mid.test' : 'big@shop.test');
        const batch: StoredEvent[] = [];
        for (let i = 0; i < 30; i++) batch.push(stored(event(T0 + i, 0, `Q${String(i).padStart(2, '0')}`, 'queued', `r${i % 4}@remote.test`), senders(i)));
        for (let i = 0; i < 30; i++) batch.push(stored(event(T0 + 100 + i, 0, `Q${String(i).padStart(2, '0')}`, i % 7 === 0 ? 'bounced' : 'delivered', `r${i % 4}@remote.test`), senders(i)));
        store.addEvents(batch);
        const all = store.queryEvents({ after: '', limit: 1000, scope: { admin: true } });
        for (const sendAs of [['@shop.test'], ['mid@mid.test'], ['rare@rare.test'], ['@rare.test', 'mid@mid.test'], ['nobody@x.test']]) {
          for (const filter of [{}, { type: 'delivered' }, { type: 'bounced' }, { type: 'bounced', recipient: 'r2@remote.test' }, { recipient: 'r1@remote.test' }]) {
            const expected = all
              .filter((e) => sendAs.some((p) => (p.startsWith('@') ? senders(Number(e.queueId.slice(1))).endsWith(p) : senders(Number(e.queueId.slice(1))) === p)))
              .filter((e) => !('type' in filter) || e.type === filter.type)
              .filter((e) => !('recipient' in filter) || e.recipient === filter.recipient)
              .map((e) => e.id);
            for (const walkRows of [{ few: 0, first: 1, longest: 1 }, { few: 1, first: 1, longest: 4 }, { few: 2, first: 2, longest: 7 }, { few: 5, first: 3, longest: 20 }, { few: 0, first: 1000, longest: 1000 }, { few: 1000, first: 1, longest: 1 }]) {
              for (const limit of [1, 3, 50]) {
                const got: string[] = [];
                let after = '';
                for (let pages = 0; pages < 100; pages++) {
                  const page = store.queryEvents({ after, limit, scope: { admin: false, sendAs }, walkRows, ...filter });
                  assert.ok(page.length <= limit);
                  got.push(...page.map((e) => e.id));
                  if (page.length < limit) break;
                  after = page.at(-1)!.id;
                }
                assert.deepEqual(got, expected, `${sendAs.join(',')} ${JSON.stringify(filter)} walks ${JSON.stringify(walkRows)} limit ${limit}`);
              }
            }
          }
        }
      });
    });

    it('events: scoped reads by send-as (address with its plus-tags, @domain, case-insensitive); messages', () => {
      using(kind.open(), (store) => {
        store.addEvents([
          stored(event(T0, 0, 'Q1', 'queued', 'r@remote.test'), 'Alice+News@Tern.test', { subject: 'Hello', messageId: '<m1@tern.test>' }),
          stored(event(T0, 1, 'Q2', 'queued', 'r@remote.test'), 'bob@other.test'),
          stored(event(T0, 2, 'Q3', 'queued', 'r@remote.test'), ''),
          stored(event(T0 + 1, 0, 'Q1', 'delivered', 'r@remote.test'), 'ignored@later.test', { subject: 'ignored' }),
        ]);
        const ids = (sendAs: string[]): string[] => store.queryEvents({ after: '', limit: 100, scope: { admin: false, sendAs } }).map((e) => `${e.queueId}:${e.type}`);
        assert.deepEqual(ids(['alice@tern.test']), ['Q1:queued', 'Q1:delivered']);
        assert.deepEqual(ids(['ALICE+news@tern.test']), ['Q1:queued', 'Q1:delivered']);
        assert.deepEqual(ids(['alice+other@tern.test']), []);
        assert.deepEqual(ids(['@TERN.test']), ['Q1:queued', 'Q1:delivered']);
        assert.deepEqual(ids(['@other.test', 'alice@tern.test']), ['Q1:queued', 'Q2:queued', 'Q1:delivered']);
        assert.deepEqual(ids(['@nowhere.test']), []);
        assert.deepEqual(ids([]), []);
        assert.deepEqual(store.queryEvents({ after: '', limit: 100, scope: { admin: true } }).map((e) => e.queueId), ['Q1', 'Q2', 'Q3', 'Q1']);

        // The message as its first event here described it.
        const q1 = store.messageEvents('Q1', { admin: false, sendAs: ['alice@tern.test'] });
        assert.deepEqual(q1?.message, { id: 'Q1', sender: 'alice+news@tern.test', messageId: '<m1@tern.test>', createdAt: T0, subject: 'Hello' });
        assert.deepEqual(q1?.events.map((e) => e.type), ['queued', 'delivered']);
        assert.deepEqual(store.messageEvents('Q2', { admin: true })?.message, { id: 'Q2', sender: 'bob@other.test', messageId: null, createdAt: T0, subject: null });
        assert.equal(store.messageEvents('Q3', { admin: true })?.message.sender, '');
        assert.equal(store.messageEvents('Q3', { admin: false, sendAs: ['@tern.test'] }), null);
        assert.equal(store.messageEvents('Q2', { admin: false, sendAs: ['alice@tern.test'] }), null);
        assert.equal(store.messageEvents('Q2', { admin: false, sendAs: [] }), null);
        assert.equal(store.messageEvents('nope', { admin: true }), null);
      });
    });

    it('messages: written again by another handle (a restart), the row is replaced but keeps its time and a known Message-ID', () => {
      const where = kind.location();
      using(kind.openAt(where), (a) => a.addEvents([stored(event(T0, 0, 'Q1', 'queued', 'r@remote.test'), 'a@tern.test', { subject: 'One', messageId: '<m1@tern.test>' })]));
      using(kind.openAt(where), (b) => {
        b.addEvents([stored(event(T0 + 60_000, 0, 'Q1', 'delivered', 'r@remote.test'), 'A2@tern.test', { subject: 'Two' })]);
        assert.deepEqual(b.messageEvents('Q1', { admin: true })?.message, { id: 'Q1', sender: 'a2@tern.test', messageId: '<m1@tern.test>', createdAt: T0, subject: 'Two' });
        assert.equal(b.messageEvents('Q1', { admin: false, sendAs: ['a@tern.test'] }), null);
        assert.equal(b.messageEvents('Q1', { admin: false, sendAs: ['a2@tern.test'] })?.events.length, 2);
        // The events API follows the message too: both events are the new sender's, none the old one's.
        assert.deepEqual(b.queryEvents({ after: '', limit: 10, scope: { admin: false, sendAs: ['a2@tern.test'] } }).map((e) => e.type), ['queued', 'delivered']);
        assert.deepEqual(b.queryEvents({ after: '', limit: 10, scope: { admin: false, sendAs: ['@tern.test'] } }).length, 2);
        assert.deepEqual(b.queryEvents({ after: '', limit: 10, scope: { admin: false, sendAs: ['a@tern.test'] } }), []);
      });
    });

    it('a large batch (several statements’ worth) is all written, its messages scoped', () => {
      using(kind.open(), (store) => {
        const batch: StoredEvent[] = [];
        for (let i = 0; i < 1_234; i++) batch.push(stored(event(T0 + i, 0, `Q${i % 700}`, 'queued', `r${i}@remote.test`), i % 2 === 0 ? 'even@tern.test' : 'odd@tern.test'));
        store.addEvents(batch);
        assert.equal(store.queryEvents({ after: '', limit: 5_000, scope: { admin: true } }).length, 1_234);
        // Q0..Q699: a message's sender is its first event's (i < 700), so the even queue ids are even's.
        const even = store.queryEvents({ after: '', limit: 5_000, scope: { admin: false, sendAs: ['even@tern.test'] } });
        const ofEvenMessages = batch.filter((b) => Number(b.event.queueId.slice(1)) % 2 === 0);
        assert.deepEqual(even.map((e) => e.id), ofEvenMessages.map((b) => b.event.id));
      });
    });

    it('expireEvents: bounded, oldest first; old messages go too', () => {
      using(kind.open(), (store) => {
        const old = T0;
        const recent = T0 + 3_600_000;
        store.addEvents([
          ...Array.from({ length: 7 }, (_, i) => stored(event(old + i, 0, `OLD${i}`, 'queued', 'r@remote.test'), 'a@tern.test')),
          stored(event(recent, 0, 'NEW', 'queued', 'r@remote.test'), 'a@tern.test'),
        ]);
        assert.equal(store.expireEvents(recent - 1, 5), 5, 'one call deletes at most max events');
        assert.deepEqual(store.queryEvents({ after: '', limit: 100, scope: { admin: true } }).map((e) => e.queueId), ['OLD5', 'OLD6', 'NEW']);
        assert.equal(store.messageEvents('OLD0', { admin: true }), null);
        assert.equal(store.expireEvents(recent - 1, 5), 2);
        assert.equal(store.expireEvents(recent - 1, 5), 0);
        assert.equal(store.messageEvents('NEW', { admin: true })?.events.length, 1);
      });
    });

    it('transaction: all or nothing, nested calls join, the value comes back', () => {
      using(kind.open(), (store) => {
        assert.throws(() =>
          store.transaction(() => {
            store.addEvents([stored(event(T0, 0, 'Q1', 'queued', 'r@remote.test'), 'a@tern.test')]);
            store.putUser(alice);
            throw new Error('boom');
          }),
        /boom/);
        assert.deepEqual(store.queryEvents({ after: '', limit: 10, scope: { admin: true } }), []);
        assert.equal(store.getUser('alice@tern.test'), null);
        const out = store.transaction(() => {
          store.transaction(() => store.putUser(alice));
          store.addEvents([stored(event(T0, 1, 'Q2', 'queued', 'r@remote.test'), 'a@tern.test')]);
          return 42;
        });
        assert.equal(out, 42);
        assert.notEqual(store.getUser('alice@tern.test'), null);
        assert.equal(store.queryEvents({ after: '', limit: 10, scope: { admin: true } }).length, 1);
        // An inner throw that escapes rolls back the outer work too.
        assert.throws(() =>
          store.transaction(() => {
            store.putUser(bob);
            store.transaction(() => {
              throw new Error('inner');
            });
          }),
        /inner/);
        assert.equal(store.getUser('bob@tern.test'), null);
      });
    });

    it('idempotency: claim, in flight, finish, replay; another body is the caller’s to judge', () => {
      using(kind.open(), (store) => {
        const never = (): boolean => false;
        assert.equal(store.claimIdempotency('K', 'a', 'h1', T0, never), null);
        assert.deepEqual(store.claimIdempotency('K', 'a', 'h1', T0 + 1, never), { bodyHash: 'h1', createdAt: T0, response: null });
        // The same idempotency key under another API key is another entry.
        assert.equal(store.claimIdempotency('K2', 'a', 'h9', T0, never), null);
        store.finishIdempotency('K', 'a', { status: 202, body: '{"id":"Q1"}' });
        assert.deepEqual(store.claimIdempotency('K', 'a', 'h2', T0 + 2, never), { bodyHash: 'h1', createdAt: T0, response: { status: 202, body: '{"id":"Q1"}' } });
        // A finished entry is not released.
        store.releaseIdempotency('K', 'a');
        assert.equal(store.claimIdempotency('K', 'a', 'h1', T0 + 3, never)?.response?.status, 202);
        // An empty response body stays a response.
        assert.equal(store.claimIdempotency('K', 'e', 'h1', T0, never), null);
        store.finishIdempotency('K', 'e', { status: 207, body: '' });
        assert.deepEqual(store.claimIdempotency('K', 'e', 'h1', T0, never)?.response, { status: 207, body: '' });
      });
    });

    it('idempotency: a stale entry is replaced, a live one untouched; release frees only in-flight claims', () => {
      using(kind.open(), (store) => {
        const seen: unknown[] = [];
        const staleBefore = (t: number) => (e: { createdAt: number }): boolean => {
          seen.push(e);
          return e.createdAt < t;
        };
        assert.equal(store.claimIdempotency('K', 'a', 'h1', T0, staleBefore(0)), null);
        assert.equal(seen.length, 0, 'a new key asks nothing');
        store.finishIdempotency('K', 'a', { status: 202, body: '{}' });
        assert.equal(store.claimIdempotency('K', 'a', 'h2', T0 + 10, staleBefore(T0 + 1)), null);
        assert.deepEqual(seen, [{ bodyHash: 'h1', createdAt: T0, response: { status: 202, body: '{}' } }]);
        assert.deepEqual(store.claimIdempotency('K', 'a', 'h3', T0 + 20, staleBefore(T0 + 1)), { bodyHash: 'h2', createdAt: T0 + 10, response: null });
        store.releaseIdempotency('K', 'a');
        assert.equal(store.claimIdempotency('K', 'a', 'h3', T0 + 30, staleBefore(0)), null);
        assert.deepEqual(store.claimIdempotency('K', 'a', 'h4', T0 + 40, staleBefore(0)), { bodyHash: 'h3', createdAt: T0 + 30, response: null });
      });
    });

    it('idempotency: expiry is bounded, oldest first', () => {
      using(kind.open(), (store) => {
        for (let i = 0; i < 7; i++) store.claimIdempotency('K', `old${i}`, 'h', T0 + i, () => false);
        store.claimIdempotency('K', 'fresh', 'h', T0 + 100, () => false);
        assert.equal(store.expireIdempotency(T0 + 100, 5), 5);
        assert.equal(store.claimIdempotency('K', 'old4', 'h', T0 + 200, () => false), null, 'expired: free again');
        assert.notEqual(store.claimIdempotency('K', 'old5', 'h', T0 + 200, () => false), null, 'younger: still there');
        assert.equal(store.expireIdempotency(T0 + 100, 5), 2);
        assert.equal(store.expireIdempotency(T0 + 100, 5), 0);
        assert.notEqual(store.claimIdempotency('K', 'fresh', 'h', T0 + 200, () => false), null);
      });
    });
  });
}

describe('store (sqlite): the file itself', () => {
  it('owner-only file; WAL; schema_version recorded', () => {
    const dir = freshDir();
    using(openStore(dir), (a) => a.putUser(alice));
    const file = path.join(dir, STORE_FILE);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const db = new DatabaseSync(file);
    assert.deepEqual({ ...db.prepare('PRAGMA journal_mode').get() }, { journal_mode: 'wal' });
    assert.deepEqual({ ...db.prepare('SELECT version FROM schema_version').get() }, { version: SCHEMA_VERSION });
    db.close();
  });

  it('schema step 16 keeps the outbox rows a version-15 store holds (their seqs and payloads); new rows may go without one', () => {
    const dir = freshDir();
    openStore(dir).close();
    const file = path.join(dir, STORE_FILE);
    // Back to version 15's outbox: body NOT NULL, and one pending row.
    let db = new DatabaseSync(file);
    db.exec(`DROP TABLE webhook_outbox;
      CREATE TABLE webhook_outbox (seq INTEGER PRIMARY KEY, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL, event_at INTEGER NOT NULL,
        body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL, claimed_until INTEGER) STRICT;
      CREATE INDEX webhook_outbox_due ON webhook_outbox (webhook_id, next_attempt);
      CREATE INDEX webhook_outbox_claimed ON webhook_outbox (claimed_until) WHERE claimed_until IS NOT NULL;
      INSERT INTO webhook_outbox (seq, webhook_id, event_id, event_at, body, attempts, next_attempt) VALUES (41, 'wh_a', 'E1', 5, '{"old":true}', 2, 10);
      UPDATE schema_version SET version = 15`);
    db.close();
    using(openStore(dir), (store) => {
      store.transaction(() => store.webhooks.enqueue([{ webhookId: 'wh_a', eventId: 'E2', eventAt: 6, nextAttempt: 10 }]));
      assert.deepEqual(
        store.webhooks.claim('wh_a', 10, 20, 10).map((r) => [r.seq, r.eventId, r.body, r.attempts]),
        [[41, 'E1', '{"old":true}', 2], [42, 'E2', null, 0]],
      );
    });
    db = new DatabaseSync(file);
    assert.deepEqual({ ...db.prepare('SELECT version FROM schema_version').get() }, { version: SCHEMA_VERSION });
    assert.deepEqual(
      (db.prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'webhook_outbox' AND type = 'index' ORDER BY name").all() as { name: string }[]).map((r) => r.name),
      ['webhook_outbox_claimed', 'webhook_outbox_due'],
    );
    db.close();
  });

  it('reads by a rare type walk the events_type index (its condition named, as SQLite needs); dense types the primary key', () => {
    const dir = freshDir();
    openStore(dir).close();
    const db = new DatabaseSync(path.join(dir, STORE_FILE));
    const plan = (sql: string, ...args: string[]) => (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...args, 100) as { detail: string }[]).map((r) => r.detail).join(' | ');
    // The statements queryEvents makes for an admin key, and for a scoped walk.
    assert.match(plan(`SELECT body FROM events WHERE id > ? AND type = ? AND ${RARE_TYPES} ORDER BY id LIMIT ?`, '', 'complained'), /USING INDEX events_type \(type=\? AND id>\?\)/);
    assert.match(plan(`SELECT id, queue_id, body FROM events WHERE id > ? AND type = ? AND recipient = ? AND ${RARE_TYPES} ORDER BY id LIMIT ?`, '', 'bounced', 'x@y.test'), /USING INDEX events_(type|recipient)/);
    assert.match(plan('SELECT body FROM events WHERE id > ? AND type = ? ORDER BY id LIMIT ?', '', 'queued'), /USING PRIMARY KEY \(id>\?\)/);
    assert.deepEqual([rareType('queued'), rareType('delivered'), rareType('complained'), rareType('bounced')], [false, false, true, true]);
    db.close();
  });

  it('refuses a database from a newer Tern', () => {
    const dir = freshDir();
    openStore(dir).close();
    const db = new DatabaseSync(path.join(dir, STORE_FILE));
    db.exec('UPDATE schema_version SET version = 99');
    db.close();
    assert.throws(() => openStore(dir), /schema version 99 is newer/);
  });

  it('a version-1 database gains the greylist table on open', () => {
    const dir = freshDir();
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, STORE_FILE);
    const db = new DatabaseSync(file);
    db.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
      CREATE TABLE users (address TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL, send_as TEXT NOT NULL DEFAULT '[]',
        messages_per_hour INTEGER, recipients_per_message INTEGER, created_at INTEGER NOT NULL) STRICT`);
    db.close();
    using(openStore(dir), (store) => {
      store.putGreylist('t', { firstSeen: 1, passedAt: null, expires: 2 });
      assert.equal(store.getGreylist('t')!.firstSeen, 1);
    });
  });

  it('step 5 moves the sender from events to messages: events stored by schema 4 stay readable and scoped', () => {
    const dir = freshDir();
    fs.mkdirSync(dir, { recursive: true });
    // A database as schema 4 left it, with one message's event.
    const db = new DatabaseSync(path.join(dir, STORE_FILE));
    db.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (4);
      CREATE TABLE users (address TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL, send_as TEXT NOT NULL DEFAULT '[]', messages_per_hour INTEGER, recipients_per_message INTEGER, created_at INTEGER NOT NULL) STRICT;
      CREATE TABLE greylist (triplet TEXT PRIMARY KEY NOT NULL, first_seen INTEGER NOT NULL, passed_at INTEGER, expires INTEGER NOT NULL) STRICT;
      CREATE TABLE api_keys (name TEXT PRIMARY KEY NOT NULL, hash TEXT NOT NULL UNIQUE, send_as TEXT NOT NULL DEFAULT '[]', admin INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL) STRICT;
      CREATE TABLE events (id TEXT PRIMARY KEY NOT NULL, queue_id TEXT NOT NULL, type TEXT NOT NULL, recipient TEXT NOT NULL, sender TEXT NOT NULL, sender_base TEXT NOT NULL, sender_domain TEXT NOT NULL, body TEXT NOT NULL) STRICT, WITHOUT ROWID;
      CREATE INDEX events_sender_base ON events (sender_base, id);
      CREATE INDEX events_sender_domain ON events (sender_domain, id);
      CREATE TABLE messages (id TEXT PRIMARY KEY NOT NULL, sender TEXT NOT NULL, message_id TEXT, created_at INTEGER NOT NULL) STRICT;
      CREATE TABLE idempotency (api_key TEXT NOT NULL, idem_key TEXT NOT NULL, body_hash TEXT NOT NULL, created_at INTEGER NOT NULL, status INTEGER, response TEXT, PRIMARY KEY (api_key, idem_key)) STRICT, WITHOUT ROWID;`);
    const ev = { id: '0000000001000000aaaa', type: 'queued', timestamp: '2026-01-01T00:00:00.000Z', queueId: 'Q1', recipient: 'r@x.test', data: {} };
    db.prepare('INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(ev.id, 'Q1', 'queued', 'r@x.test', 'ann+tag@a.test', 'ann@a.test', '@a.test', JSON.stringify(ev));
    db.prepare('INSERT INTO messages VALUES (?, ?, NULL, ?)').run('Q1', 'ann+tag@a.test', 1);
    db.close();
    using(openStore(dir), (store) => {
      assert.equal(store.messageEvents('Q1', { admin: false, sendAs: ['ann@a.test'] })?.events[0]?.id, ev.id);
      assert.equal(store.queryEvents({ after: '', limit: 10, scope: { admin: false, sendAs: ['@a.test'] } }).length, 1);
      assert.equal(store.queryEvents({ after: '', limit: 10, scope: { admin: false, sendAs: ['@b.test'] } }).length, 0);
      assert.equal(store.messageEvents('Q1', { admin: false, sendAs: ['bob@a.test'] }), null);
    });
  });
});
