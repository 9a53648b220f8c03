import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, type Store } from './store.ts';
import type { SuppressionRecord } from './suppressions.ts';

function tempStore(): { store: Store; dir: string; other: () => Store; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-supp-store-'));
  const opened: Store[] = [];
  const open = () => {
    const s = openStore(dir);
    opened.push(s);
    return s;
  };
  const store = open();
  return { store, dir, other: open, cleanup: () => (opened.forEach((s) => s.close()), fs.rmSync(dir, { recursive: true, force: true })) };
}

const rec = (address: string, over: Partial<SuppressionRecord> = {}): SuppressionRecord => ({ address, reason: 'hard-bounce', source: 'bounce', detail: '550 5.1.1 no such user', createdAt: 1_700_000_000_000, ...over });

test('put, get, replace, delete; put tells new from replaced', () => {
  const t = tempStore();
  try {
    const s = t.store.suppressions;
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
  } finally {
    t.cleanup();
  }
});

test('addMissing never overwrites an entry and counts only the new ones', () => {
  const t = tempStore();
  try {
    const s = t.store.suppressions;
    s.put(rec('kept@x.test', { reason: 'manual', source: 'api', detail: null }));
    assert.equal(s.addMissing([rec('kept@x.test'), rec('new@x.test'), rec('new2@x.test')]), 2);
    assert.equal(s.get('kept@x.test')!.source, 'api');
    assert.equal(s.get('new@x.test')!.source, 'bounce');
    assert.equal(s.addMissing([]), 0);
  } finally {
    t.cleanup();
  }
});

test('page walks the list in address order after a cursor, without gaps or repeats', () => {
  const t = tempStore();
  try {
    const s = t.store.suppressions;
    const all = ['d@x.test', 'a@x.test', 'c@y.test', 'b@x.test', 'e@x.test'];
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
    assert.deepEqual(seen, all.toSorted());
  } finally {
    t.cleanup();
  }
});

test('changedElsewhere: false after a full read and after own writes; true after another connection writes, until read again', () => {
  const t = tempStore();
  try {
    const mine = t.store.suppressions;
    assert.equal(mine.changedElsewhere(), true, 'never read');
    const seen: string[] = [];
    mine.each((r) => seen.push(r.address));
    assert.deepEqual(seen, []);
    assert.equal(mine.changedElsewhere(), false);
    mine.put(rec('own@x.test'));
    mine.addMissing([rec('own2@x.test')]);
    mine.delete('own2@x.test');
    assert.equal(mine.changedElsewhere(), false, 'own writes are known');

    // Another process (the CLI, sqlite3) writes: noticed.
    const theirs = t.other().suppressions;
    theirs.put(rec('cli@x.test', { source: 'api' }));
    assert.equal(mine.changedElsewhere(), true);
    // An own write after theirs does not hide it.
    mine.put(rec('own3@x.test'));
    assert.equal(mine.changedElsewhere(), true);
    const again: string[] = [];
    mine.each((r) => again.push(r.address));
    assert.deepEqual(again.toSorted(), ['cli@x.test', 'own3@x.test', 'own@x.test']);
    assert.equal(mine.changedElsewhere(), false);
  } finally {
    t.cleanup();
  }
});

test('sentMessage finds an API message by its Message-ID, as recorded with its events', () => {
  const t = tempStore();
  try {
    t.store.addEvents([{ sender: 'Alice@tern.test', messageId: '<abc@mx.tern.test>', event: { id: '01', type: 'queued', timestamp: new Date(1_700_000_000_000).toISOString(), queueId: 'Q1', recipient: 'r@x.test', data: { attempt: null, relay: null, tls: null, reply: null, bounceClass: null, source: 'api', tags: null, transport: null } } }]);
    const found = t.store.suppressions.sentMessage('<abc@mx.tern.test>');
    assert.equal(found?.id, 'Q1');
    assert.equal(found?.sender, 'alice@tern.test');
    assert.equal(t.store.suppressions.sentMessage('<other@mx.tern.test>'), null);
  } finally {
    t.cleanup();
  }
});
