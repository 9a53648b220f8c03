import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore } from '../store/store.ts';
import { silentLogger } from '../util/log.ts';
import { ApiError } from './problem.ts';
import { IDEMPOTENCY_EXPIRY_BATCH, IDEMPOTENCY_TTL_MS, IN_FLIGHT_TIMEOUT_MS, Idempotency, canonicalJson, requestHash } from './idempotency.ts';

function withStore(fn: (store: ReturnType<typeof openStore>) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-idem-'));
    const store = openStore(dir);
    try {
      await fn(store);
    } finally {
      store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('canonical body: key order and spacing do not matter; values, array order and the route do', () => {
  assert.equal(canonicalJson({ b: [1, { d: 'x', c: null }], a: true }), '{"a":true,"b":[1,{"c":null,"d":"x"}]}');
  assert.equal(requestHash('/v1/messages', { a: 1, b: 2 }), requestHash('/v1/messages', { b: 2, a: 1 }));
  assert.notEqual(requestHash('/v1/messages', { a: [1, 2] }), requestHash('/v1/messages', { a: [2, 1] }));
  assert.notEqual(requestHash('/v1/messages', { a: '1' }), requestHash('/v1/messages', { a: 1 }));
  assert.notEqual(requestHash('/v1/messages', { a: 1 }), requestHash('/v1/messages/batch', { a: 1 }));
});

test('after 24 h a key is free again; an in-flight claim is given up after its timeout', withStore(async (store) => {
  const idem = new Idempotency(store, silentLogger);
  let sends = 0;
  const send = async () => ({ status: 202, body: { n: ++sends } });
  const t0 = 1_000_000_000_000;
  assert.deepEqual(await idem.run('K', 'a', '/r', { x: 1 }, send, t0), { status: 202, body: { n: 1 }, replayed: false });
  assert.deepEqual(await idem.run('K', 'a', '/r', { x: 1 }, send, t0 + IDEMPOTENCY_TTL_MS - 1), { status: 202, body: { n: 1 }, replayed: true });
  // Past the 24 h: a new request, even with another body.
  assert.deepEqual(await idem.run('K', 'a', '/r', { x: 2 }, send, t0 + IDEMPOTENCY_TTL_MS), { status: 202, body: { n: 2 }, replayed: false });

  // A claim whose process died: 409 until the in-flight timeout, then the retry runs.
  assert.equal(store.claimIdempotency('K', 'dead', requestHash('/r', { y: 1 }), t0, () => false), null);
  await assert.rejects(idem.run('K', 'dead', '/r', { y: 1 }, send, t0 + IN_FLIGHT_TIMEOUT_MS - 1), (e: unknown) => e instanceof ApiError && e.status === 409);
  assert.deepEqual(await idem.run('K', 'dead', '/r', { y: 1 }, send, t0 + IN_FLIGHT_TIMEOUT_MS), { status: 202, body: { n: 3 }, replayed: false });

  // A failed send releases its claim: the retry runs.
  await assert.rejects(idem.run('K', 'fail', '/r', {}, async () => Promise.reject(new ApiError(400, 'no')), t0));
  assert.equal((await idem.run('K', 'fail', '/r', {}, send, t0)).replayed, false);
}));

test('expiry deletes only entries past 24 h, a bounded batch per statement', withStore(async (store) => {
  const now = 2_000_000_000_000;
  const old = now - IDEMPOTENCY_TTL_MS - 1;
  const n = IDEMPOTENCY_EXPIRY_BATCH * 2 + 500;
  for (let i = 0; i < n; i++) store.claimIdempotency('K', `old-${i}`, 'h', old, () => false);
  store.claimIdempotency('K', 'fresh', requestHash('/r', {}), now - 1000, () => false);
  assert.equal(store.expireIdempotency(now - IDEMPOTENCY_TTL_MS, IDEMPOTENCY_EXPIRY_BATCH), IDEMPOTENCY_EXPIRY_BATCH);
  const idem = new Idempotency(store, silentLogger);
  assert.equal(await idem.expire(now), n - IDEMPOTENCY_EXPIRY_BATCH);
  assert.equal(await idem.expire(now), 0);
  // The fresh one is still there (in flight, never answered): 409.
  await assert.rejects(idem.run('K', 'fresh', '/r', {}, async () => ({ status: 202, body: {} }), now), (e: unknown) => e instanceof ApiError && e.status === 409);
}));
