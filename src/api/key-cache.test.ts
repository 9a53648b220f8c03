import { it } from 'node:test';
import assert from 'node:assert/strict';
import { ApiKeyCache, EMBEDDED_MAX_AGE_MS, hashApiKey } from './keys.ts';
import type { ApiKeyRecord, WatchedTable } from '../store/store.ts';

const KEY: ApiKeyRecord = { name: 'app', hash: 'h1', sendAs: [], admin: false, createdAt: 0 };

it('without onChange (the embedded store) keys are kept EMBEDDED_MAX_AGE_MS (1 s): `tern apikey revoke` counts within a second; clear() at once', () => {
  let reads = 0;
  let live: ApiKeyRecord | null = KEY;
  let now = 0;
  const cache = new ApiKeyCache({ apiKeyByHash: () => (reads++, live) }, { now: () => now });
  assert.equal(cache.byHash('h1'), KEY);
  assert.equal(cache.byHash('h1'), KEY);
  assert.equal(reads, 1, 'the second came from memory');
  live = null; // revoked by another process
  now += EMBEDDED_MAX_AGE_MS - 1;
  assert.equal(cache.byHash('h1'), KEY, 'still in memory just before the second is up');
  now += 1;
  assert.equal(cache.byHash('h1'), null, 'read again after a second');
  live = KEY;
  assert.equal(cache.byHash('h1'), null);
  cache.clear(); // the dashboard made it
  assert.equal(cache.byHash('h1'), KEY);
  assert.equal(reads, 3);
});

it('with onChange (a shared store) keys are kept until a change is announced, or at most maxAgeMs', () => {
  let reads = 0;
  let live: ApiKeyRecord | null = KEY;
  let now = 0;
  const watchers: (() => void)[] = [];
  const cache = new ApiKeyCache(
    { apiKeyByHash: () => (reads++, live), onChange: (_t: WatchedTable, fn: () => void) => (watchers.push(fn), () => {}) },
    { maxAgeMs: 1000, now: () => now },
  );
  assert.equal(cache.byHash('h1'), KEY);
  assert.equal(cache.byHash('h1'), KEY);
  assert.equal(reads, 1, 'the second came from memory');
  live = null;
  watchers.forEach((w) => w()); // another node revoked it
  assert.equal(cache.byHash('h1'), null);
  assert.equal(reads, 2);
  live = KEY;
  now += 999;
  assert.equal(cache.byHash('h1'), null, 'an unknown key is remembered too (no announcement came)');
  now += 2;
  assert.equal(cache.byHash('h1'), KEY, 'but no longer than maxAgeMs');
});

it('byKey looks a presented key up by its SHA-256 and keeps nothing of the key itself; revocation still counts', () => {
  const presented = 'tern_abc';
  const hash = hashApiKey(presented);
  const asked: string[] = [];
  let live: ApiKeyRecord | null = { ...KEY, hash };
  let now = 0;
  const cache = new ApiKeyCache({ apiKeyByHash: (h: string) => (asked.push(h), h === hash ? live : null) }, { now: () => now });
  assert.equal(cache.byKey(presented)?.name, 'app');
  assert.deepEqual(asked, [hash], 'looked up by the hash, never by the key itself');
  assert.equal(cache.byKey(presented)?.name, 'app');
  assert.equal(asked.length, 1, 'the record is remembered by its hash');
  // A wrong key is hashed and looked up each time once its entry is stale.
  assert.equal(cache.byKey('tern_wrong'), null);
  now += EMBEDDED_MAX_AGE_MS;
  assert.equal(cache.byKey('tern_wrong'), null);
  assert.deepEqual(asked.slice(1), [hashApiKey('tern_wrong'), hashApiKey('tern_wrong')]);
  // Revoked (by another process): seen once the entry is stale.
  live = null;
  now += EMBEDDED_MAX_AGE_MS;
  assert.equal(cache.byKey(presented), null);
  cache.clear();
  live = { ...KEY, hash };
  assert.equal(cache.byKey(presented)?.name, 'app');
});
