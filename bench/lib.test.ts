// bench/lib.ts's CPU meters: the user / system split adds up to the total
// that the benchmarks have always reported.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cpuMeter, cpuMeterSplit, cpuMs, cpuSplitMs } from './lib.ts';

/** Spin in JavaScript until this process has spent `ms` of user time (not wall time: the machine may be busy). */
function burn(ms: number): void {
  const start = process.cpuUsage();
  let x = 0;
  while (process.cpuUsage(start).user < ms * 1000) for (let i = 0; i < 10_000; i++) x += Math.sqrt(x + 1);
  assert.ok(x > 0);
}

test('cpuSplitMs: user + system is cpuMs, and a process that is gone counts 0', () => {
  const split = cpuSplitMs([process.pid]);
  const total = cpuMs([process.pid]);
  assert.ok(split.user >= 0 && split.system >= 0);
  // Read a moment apart: at most a tick or two (10 ms each) between them.
  assert.ok(Math.abs(split.user + split.system - total) <= 20, `${split.user} + ${split.system} vs ${total}`);
  assert.deepEqual(cpuSplitMs([2 ** 30]), { user: 0, system: 0 });
  assert.equal(cpuMs([2 ** 30]), 0);
});

test('cpuMeterSplit: time spent in JavaScript shows as user time; total = user + system', () => {
  const split = cpuMeterSplit(() => [process.pid]);
  const plain = cpuMeter(() => [process.pid]);
  burn(300);
  const s = split();
  const t = plain();
  assert.equal(s.total, s.user + s.system);
  // /proc counts in ticks of 10 ms.
  assert.ok(s.user >= 280, `user ${s.user} ms after 300 ms of spinning`);
  assert.ok(s.system < s.user, `system ${s.system} ms, user ${s.user} ms`);
  assert.ok(Math.abs(s.total - t) <= 20, `split ${s.total} vs plain ${t}`);
});

test('cpuMeterSplit: a process that appears after the start counts from zero', () => {
  let pids: number[] = [];
  const meter = cpuMeterSplit(() => pids);
  pids = [process.pid];
  const s = meter();
  // All of this process's time so far, not the (empty) span since the meter started.
  assert.ok(Math.abs(s.total - cpuMs([process.pid])) <= 20);
});
