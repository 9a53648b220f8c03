// The suppression list's table, against both stores (test/helpers/stores.ts):
// the same answers from the embedded store and from PostgreSQL.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SuppressionRecord } from './suppressions.ts';
import { storeKinds } from '../../test/helpers/stores.ts';

const rec = (address: string, over: Partial<SuppressionRecord> = {}): SuppressionRecord => ({ address, reason: 'hard-bounce', source: 'bounce', detail: '550 5.1.1 no such user', createdAt: 1_700_000_000_000, ...over });

for (const kind of storeKinds()) {
  describe(`suppression store (${kind.name})`, { skip: kind.skip }, () => {
    const withStore = kind.withStore;

    it('put, get, replace, delete; put tells new from replaced', () =>
      withStore((store) => {
        const s = store.suppressions;
        assert.equal(s.get('a@x.test'), null);
        assert.equal(s.put(rec('a@x.test')), true);
        assert.deepEqual(s.get('a@x.test'), rec('a@x.test'));
        assert.equal(s.put(rec('a@x.test', { reason: 'asked to stop', source: 'api', detail: null })), false);
        assert.deepEqual(s.get('a@x.test'), rec('a@x.test', { reason: 'asked to stop', source: 'api', detail: null }));
        assert.equal(s.count(), 1);
        assert.equal(s.delete('a@x.test'), true);
        assert.equal(s.delete('a@x.test'), false);
        assert.equal(s.get('a@x.test'), null);
        assert.equal(s.count(), 0);
      }));

    it('addMissing never overwrites an entry and counts only the new ones', () =>
      withStore((store) => {
        const s = store.suppressions;
        s.put(rec('kept@x.test', { reason: 'manual', source: 'api', detail: null }));
        assert.equal(s.addMissing([rec('kept@x.test'), rec('new@x.test'), rec('new2@x.test')]), 2);
        assert.equal(s.get('kept@x.test')!.source, 'api');
        assert.equal(s.get('new@x.test')!.source, 'bounce');
        assert.equal(s.addMissing([]), 0);
        // An address twice in one batch is added once; a null detail stays null.
        assert.equal(s.addMissing([rec('twice@x.test', { detail: null }), rec('twice@x.test', { reason: 'second' })]), 1);
        assert.deepEqual(s.get('twice@x.test'), rec('twice@x.test', { detail: null }));
        assert.equal(s.count(), 4);
      }));

    it('page walks the list in byte order after a cursor, without gaps or repeats', () =>
      withStore((store) => {
        const s = store.suppressions;
        // '-', '.', '_' and digits sort differently under a natural-language collation; byte order is SQLite's.
        const all = ['d@x.test', 'a@x.test', 'c@y.test', 'b@x.test', 'e@x.test', 'a-b@x.test', 'a.b@x.test', 'a_b@x.test', 'a1@x.test', 'ab@x.test', 'é@x.test'];
        s.addMissing(all.map((a) => rec(a)));
        const seen: string[] = [];
        let after = '';
        for (;;) {
          const page = s.page(after, 2);
          if (page.length === 0) break;
          assert.ok(page.length <= 2);
          seen.push(...page.map((r) => r.address));
          after = page.at(-1)!.address;
        }
        assert.deepEqual(seen, all.toSorted((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
      }));

    it('changedElsewhere: false after a full read and after own writes; true after another connection writes, until read again', () => {
      const at = kind.location();
      const first = kind.openAt(at);
      const second = kind.openAt(at);
      try {
        const mine = first.suppressions;
        assert.equal(mine.changedElsewhere(), true, 'never read');
        const seen: string[] = [];
        mine.each((r) => seen.push(r.address));
        assert.deepEqual(seen, []);
        assert.equal(mine.changedElsewhere(), false);
        mine.put(rec('own@x.test'));
        mine.addMissing([rec('own2@x.test')]);
        mine.delete('own2@x.test');
        assert.equal(mine.changedElsewhere(), false, 'own writes are known');

        // Another process (the CLI, sqlite3) or node writes: noticed.
        const theirs = second.suppressions;
        theirs.put(rec('cli@x.test', { source: 'api' }));
        assert.equal(mine.changedElsewhere(), true);
        // An own write after theirs does not hide it.
        mine.put(rec('own3@x.test'));
        assert.equal(mine.changedElsewhere(), true);
        const again: string[] = [];
        mine.each((r) => again.push(r.address));
        assert.deepEqual(again.toSorted(), ['cli@x.test', 'own3@x.test', 'own@x.test']);
        assert.equal(mine.changedElsewhere(), false);
        // Reading and writes that change nothing (a delete of no row) keep it so.
        theirs.get('own@x.test');
        mine.delete('nobody@x.test');
        assert.equal(mine.changedElsewhere(), false);
      } finally {
        first.close();
        second.close();
      }
    });

    it('a write inside a store transaction joins it: rolled back with it', () =>
      withStore((store) => {
        assert.throws(() =>
          store.transaction(() => {
            store.suppressions.put(rec('rolled@x.test'));
            throw new Error('abort');
          }),
        );
        assert.equal(store.suppressions.get('rolled@x.test'), null);
        store.transaction(() => store.suppressions.addMissing([rec('kept@x.test')]));
        assert.notEqual(store.suppressions.get('kept@x.test'), null);
      }));

    it('sentMessage finds an API message by its Message-ID, as recorded with its events', () =>
      withStore((store) => {
        store.addEvents([{ sender: 'Alice@tern.test', messageId: '<abc@mx.tern.test>', event: { id: '01', type: 'queued', timestamp: new Date(1_700_000_000_000).toISOString(), queueId: 'Q1', recipient: 'r@x.test', data: { attempt: null, relay: null, tls: null, reply: null, bounceClass: null, source: 'api', tags: null, transport: null } } }]);
        const found = store.suppressions.sentMessage('<abc@mx.tern.test>');
        assert.equal(found?.id, 'Q1');
        assert.equal(found?.sender, 'alice@tern.test');
        assert.equal(found?.createdAt, 1_700_000_000_000);
        assert.equal(store.suppressions.sentMessage('<other@mx.tern.test>'), null);
      }));
  });
}
