import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientCheckCache } from './authenticate.ts';

test('client checks: one lookup per key within the TTL; temporary errors and failures are not kept; bounded', async () => {
  let now = 1000;
  const cache = new ClientCheckCache<string>(60_000, 3, () => now);
  let calls = 0;
  const make = (v: string) => () => {
    calls++;
    return Promise.resolve(v);
  };
  const keep = (v: string) => v !== 'temperror';
  assert.equal(await cache.get('1.2.3.4', make('pass'), keep), 'pass');
  assert.equal(await cache.get('1.2.3.4', make('fail'), keep), 'pass', 'cached');
  assert.equal(calls, 1);
  now += 60_001;
  assert.equal(await cache.get('1.2.3.4', make('fail'), keep), 'fail', 'expired: asked again');
  assert.equal(calls, 2);
  // temperror is answered but not kept
  assert.equal(await cache.get('5.6.7.8', make('temperror'), keep), 'temperror');
  await new Promise((r) => setImmediate(r));
  assert.equal(await cache.get('5.6.7.8', make('pass'), keep), 'pass');
  assert.equal(calls, 4);
  // a rejected lookup is not kept either
  await assert.rejects(cache.get('9.9.9.9', () => Promise.reject(new Error('boom')), keep));
  await new Promise((r) => setImmediate(r));
  assert.equal(await cache.get('9.9.9.9', make('pass'), keep), 'pass');
  // at most 3 entries: the oldest goes
  await cache.get('a', make('x'), keep);
  await cache.get('b', make('x'), keep);
  assert.equal(cache.size, 3);
});
