// The MTA-STS policy cache's table: rows survive a reopen, one row per domain,
// expiry by time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore } from './store.ts';
import type { CachedStsPolicy } from './mta-sts.ts';

const POLICY = 'version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n';
const row = (domain: string, over: Partial<CachedStsPolicy> = {}): CachedStsPolicy => ({
  domain,
  policyId: '20261207',
  policy: POLICY,
  fetchedAt: 1_700_000_000_000,
  expiresAt: 1_700_086_400_000,
  ...over,
});

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tern-mta-sts-store-'));
}

test('put, get, replace, delete', () => {
  const dir = tempDir();
  const store = openStore(dir);
  try {
    const s = store.mtaSts;
    assert.equal(s.get('example.test'), null);
    s.put(row('example.test'));
    assert.deepEqual(s.get('example.test'), row('example.test'));
    // A new policy for the domain replaces the old: one row per domain.
    s.put(row('example.test', { policyId: 'next', fetchedAt: 1_700_000_500_000, expiresAt: 1_700_000_600_000 }));
    assert.deepEqual(s.get('example.test'), row('example.test', { policyId: 'next', fetchedAt: 1_700_000_500_000, expiresAt: 1_700_000_600_000 }));
    assert.equal(s.get('other.test'), null);
    s.delete('example.test');
    assert.equal(s.get('example.test'), null);
    s.delete('example.test'); // deleting nothing is fine
  } finally {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a policy survives closing and reopening the store', () => {
  const dir = tempDir();
  try {
    const first = openStore(dir);
    first.mtaSts.put(row('example.test'));
    first.close();
    const second = openStore(dir);
    try {
      assert.deepEqual(second.mtaSts.get('example.test'), row('example.test'));
    } finally {
      second.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('expire removes only rows that expired before the given time, and counts them', () => {
  const dir = tempDir();
  const store = openStore(dir);
  try {
    const s = store.mtaSts;
    s.put(row('old.test', { expiresAt: 1000 }));
    s.put(row('edge.test', { expiresAt: 2000 }));
    s.put(row('new.test', { expiresAt: 3000 }));
    assert.equal(s.expire(2000), 1);
    assert.equal(s.get('old.test'), null);
    assert.notEqual(s.get('edge.test'), null);
    assert.notEqual(s.get('new.test'), null);
    assert.equal(s.expire(2000), 0);
    assert.equal(s.expire(10_000), 2);
  } finally {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
