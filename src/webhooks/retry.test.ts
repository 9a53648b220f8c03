import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JITTER, nextAttempt, retryDelay, RETRY_SCHEDULE } from './retry.ts';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

test('the schedule: 5 s, 30 s, 2 m, 10 m, 30 m, 1 h, 2 h, 4 h, then every 6 h', () => {
  const none = () => 0;
  assert.deepEqual(
    Array.from({ length: 12 }, (_, i) => retryDelay(i + 1, RETRY_SCHEDULE, none)),
    [5 * S, 30 * S, 2 * M, 10 * M, 30 * M, 1 * H, 2 * H, 4 * H, 6 * H, 6 * H, 6 * H, 6 * H],
  );
  // The contract: the first retry within a minute, whatever the jitter.
  assert.ok(retryDelay(1, RETRY_SCHEDULE, () => 0.999_999) < M);
});

test('jitter adds up to 10 % and never takes anything off', () => {
  assert.equal(retryDelay(3, RETRY_SCHEDULE, () => 0), 2 * M);
  assert.equal(retryDelay(3, RETRY_SCHEDULE, () => 0.5), Math.round(2 * M * (1 + JITTER / 2)));
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const d = retryDelay(2);
    assert.ok(d >= 30 * S && d <= 33 * S, String(d));
    seen.add(d);
  }
  assert.ok(seen.size > 50, 'the delays spread');
});

test('retries end webhooks.retryFor after the event: about 19 attempts in 3 days, none after the deadline', () => {
  const start = 1_765_000_000_000;
  const deadline = start + 3 * D;
  let now = start;
  const times = [now];
  for (let attempts = 1; ; attempts++) {
    const next = nextAttempt(attempts, now, deadline, RETRY_SCHEDULE, () => 0.5);
    if (next === null) break;
    times.push((now = next));
  }
  assert.ok(times.every((t) => t <= deadline));
  assert.ok(deadline - times.at(-1)! < 6.6 * H, 'the last attempt comes within one interval of the deadline');
  assert.ok(times.length >= 15 && times.length <= 20, String(times.length));
  // A schedule from the config (tests) is used as given, its last step repeating.
  assert.equal(nextAttempt(7, 0, 10_000, [100, 200], () => 0), 200);
  assert.equal(nextAttempt(1, 0, 50, [100], () => 0), null);
});
