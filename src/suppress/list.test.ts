import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { openStore, type Store } from '../store/store.ts';
import { silentLogger } from '../util/log.ts';
import { SuppressionList, REFRESH_MS } from './list.ts';

function setup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-supp-list-'));
  const stores: Store[] = [];
  const open = () => (stores.push(openStore(dir)), stores.at(-1)!);
  const store = open();
  let now = 1_700_000_000_000;
  const list = new SuppressionList(store.suppressions, { log: silentLogger, now: () => now });
  return { store, list, other: open, advance: (ms: number) => (now += ms), cleanup: () => (stores.forEach((s) => s.close()), fs.rmSync(dir, { recursive: true, force: true })) };
}

const bounce = (address: string) => ({ address, reason: 'hard-bounce', source: 'bounce' as const, detail: '550 5.1.1 unknown', createdAt: 1 });

test('lookup matches the whole address without regard to case; plus-tags are other addresses', () => {
  const t = setup();
  try {
    assert.equal(t.list.lookup('Bob@Example.org'), null);
    t.list.put('Bob@Example.ORG', 'asked to stop', 'api');
    assert.deepEqual(t.list.lookup('bob@example.org'), { reason: 'asked to stop', source: 'api', createdAt: 1_700_000_000_000 });
    assert.ok(t.list.lookup('BOB@EXAMPLE.ORG'));
    assert.equal(t.list.lookup('bob+news@example.org'), null);
    assert.equal(t.list.lookup('bob@example.net'), null);
    assert.equal(t.store.suppressions.get('bob@example.org')!.reason, 'asked to stop', 'stored lower-cased');
  } finally {
    t.cleanup();
  }
});

test('put writes before it returns and says whether the address was new; remove takes it off at once', () => {
  const t = setup();
  try {
    assert.equal(t.list.put('a@x.test', 'one', 'api').created, true);
    t.advance(5000);
    const replaced = t.list.put('a@x.test', 'two', 'api');
    assert.equal(replaced.created, false);
    assert.equal(replaced.record.createdAt, 1_700_000_000_000, 'suppressed since the first put');
    assert.equal(t.store.suppressions.get('a@x.test')!.reason, 'two');
    assert.equal(t.list.remove('A@x.test'), true);
    assert.equal(t.list.lookup('a@x.test'), null);
    assert.equal(t.store.suppressions.get('a@x.test'), null);
    assert.equal(t.list.remove('a@x.test'), false);
  } finally {
    t.cleanup();
  }
});

test('automatic additions are in force at once and written together on the next turn, never over an existing entry', async () => {
  const t = setup();
  try {
    t.list.put('manual@x.test', 'keep me', 'api');
    t.list.suppress(bounce('one@x.test'));
    t.list.suppress(bounce('Two@x.test'));
    t.list.suppress(bounce('manual@x.test'));
    assert.equal(t.list.lookup('one@x.test')?.source, 'bounce');
    assert.equal(t.list.lookup('two@x.test')?.source, 'bounce');
    assert.equal(t.store.suppressions.get('one@x.test'), null, 'not written yet');
    await turn();
    assert.equal(t.store.suppressions.get('one@x.test')?.detail, '550 5.1.1 unknown');
    assert.ok(t.store.suppressions.get('two@x.test'));
    assert.equal(t.store.suppressions.get('manual@x.test')?.reason, 'keep me');
    assert.equal(t.list.lookup('manual@x.test')?.reason, 'keep me');
  } finally {
    t.cleanup();
  }
});

test('remove cancels a pending automatic addition; get and page see pending ones', async () => {
  const t = setup();
  try {
    t.list.suppress(bounce('p@x.test'));
    assert.equal(t.list.remove('p@x.test'), true);
    await turn();
    assert.equal(t.store.suppressions.get('p@x.test'), null);
    assert.equal(t.list.lookup('p@x.test'), null);
    t.list.suppress(bounce('q@x.test'));
    assert.equal(t.list.get('q@x.test')?.source, 'bounce');
    t.list.suppress(bounce('r@x.test'));
    assert.deepEqual(t.list.page('', 10).map((r) => r.address), ['q@x.test', 'r@x.test']);
  } finally {
    t.cleanup();
  }
});

test('changes by another process are noticed within REFRESH_MS, not before (bounded staleness, one cheap read per interval)', () => {
  const t = setup();
  try {
    const cli = t.other().suppressions;
    cli.put({ address: 'cli@x.test', reason: 'by hand', source: 'api', detail: null, createdAt: 5 });
    assert.equal(t.list.lookup('cli@x.test'), null, 'within the interval: the cached answer');
    t.advance(REFRESH_MS);
    assert.equal(t.list.lookup('cli@x.test')?.reason, 'by hand');
    assert.equal(t.list.size, 1);
    cli.delete('cli@x.test');
    t.advance(REFRESH_MS);
    assert.equal(t.list.lookup('cli@x.test'), null);
  } finally {
    t.cleanup();
  }
});

test('a reload keeps automatic additions that are not written yet', async () => {
  const t = setup();
  try {
    t.list.suppress(bounce('pending@x.test'));
    t.other().suppressions.put({ address: 'cli@x.test', reason: 'x', source: 'api', detail: null, createdAt: 5 });
    t.advance(REFRESH_MS);
    assert.ok(t.list.lookup('cli@x.test'));
    assert.ok(t.list.lookup('pending@x.test'));
    await turn();
    assert.ok(t.store.suppressions.get('pending@x.test'));
  } finally {
    t.cleanup();
  }
});

test('entries already in the store are loaded at start', () => {
  const t = setup();
  try {
    t.store.suppressions.put({ address: 'old@x.test', reason: 'complaint', source: 'complaint', detail: 'Feedback-Type: abuse', createdAt: 7 });
    const fresh = new SuppressionList(t.store.suppressions, { log: silentLogger });
    assert.deepEqual(fresh.lookup('OLD@x.test'), { reason: 'complaint', source: 'complaint', createdAt: 7 });
  } finally {
    t.cleanup();
  }
});
