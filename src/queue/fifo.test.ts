import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Fifo } from './fifo.ts';

test('first in, first out, through compactions, interleaved pushes and an empty queue', () => {
  const q = new Fifo<number>();
  assert.equal(q.length, 0);
  assert.equal(q.shift(), undefined);
  const expected: number[] = [];
  let next = 0;
  // Bursts of pushes and shifts of varying sizes, past the compaction threshold many times.
  for (let round = 0; round < 200; round++) {
    const pushes = (round * 37) % 900;
    for (let k = 0; k < pushes; k++) {
      q.push(next);
      expected.push(next++);
    }
    const shifts = (round * 53) % 1000;
    for (let k = 0; k < shifts && expected.length > 0; k++) assert.equal(q.shift(), expected.shift());
    assert.equal(q.length, expected.length);
  }
  while (expected.length > 0) assert.equal(q.shift(), expected.shift());
  assert.equal(q.length, 0);
  assert.equal(q.shift(), undefined);
});

test('200,000 items in and out in order', () => {
  const q = new Fifo<{ n: number }>();
  for (let n = 0; n < 200_000; n++) q.push({ n });
  for (let n = 0; n < 200_000; n++) assert.equal(q.shift()!.n, n);
  assert.equal(q.length, 0);
});
