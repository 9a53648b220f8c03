import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IdleSweeper, type Timed } from './idle-sweeper.ts';

function item(): Timed & { fired: number } {
  return { deadline: Infinity, fired: 0, onIdleTimeout() { this.fired++; } };
}

test('a session past its deadline is timed out once, and never before its timeout', async () => {
  const sweeper = new IdleSweeper(80); // ticks every 20 ms
  const late = item();
  const fresh = item();
  const none = item();
  sweeper.add(late);
  sweeper.add(fresh);
  sweeper.add(none);
  const t0 = Date.now();
  late.deadline = sweeper.deadline(80);
  fresh.deadline = sweeper.deadline(10_000);
  none.deadline = sweeper.deadline(0);
  assert.equal(none.deadline, Infinity, '0 means no timeout');
  while (late.fired === 0 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
  const waited = Date.now() - t0;
  assert.equal(late.fired, 1);
  assert.ok(waited >= 80, `not early (${waited} ms)`);
  assert.ok(waited < 80 + 200, `not much later than its timeout plus a tick or two (${waited} ms)`);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(late.fired, 1, 'removed after firing: fired once');
  assert.equal(fresh.fired, 0);
  assert.equal(none.fired, 0);
  sweeper.delete(fresh);
  sweeper.delete(none);
});

test('refreshing the deadline keeps an active session alive', async () => {
  const sweeper = new IdleSweeper(60);
  const s = item();
  sweeper.add(s);
  for (let i = 0; i < 10; i++) {
    s.deadline = sweeper.deadline(60);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(s.fired, 0, 'input every 20 ms with a 60 ms timeout');
  sweeper.delete(s);
});
