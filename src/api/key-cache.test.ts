import { it } from 'node:test';
import assert from 'node:assert/strict';
import { ApiKeyCache } from './keys.ts';
import type { ApiKeyRecord, WatchedTable } from '../store/store.ts';

const KEY: ApiKeyRecord = { name: 'app', hash: 'h1', sendAs: [], admin: false, createdAt: 0 };

it('without onChange (the embedded store) every lookup reads the store: a revoke takes effect at once', () => {
  let reads = 0;
  let live: ApiKeyRecord | null = KEY;
  const cache = new ApiKeyCache({ apiKeyByHash: () => (reads++, live) });
  assert.equal(cache.byHash('h1'), KEY);
  assert.equal(cache.byHash('h1'), KEY);
  live = null;
  assert.equal(cache.byHash('h1'), null);
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
