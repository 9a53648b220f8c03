import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TimeIndex } from './time-index.ts';

/** A seeded generator (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function drain<T>(index: TimeIndex<T>): T[] {
  const out: T[] = [];
  for (let item = index.popDue(Infinity); item !== undefined; item = index.popDue(Infinity)) out.push(item);
  return out;
}

test('items come out earliest first, whatever order they went in', () => {
  const index = new TimeIndex<string>();
  const times = [50, 10, 40, 30, 20, 60, 0, 35];
  for (const t of times) index.set(`m${t}`, t);
  assert.equal(index.size, times.length);
  assert.equal(index.peekTime(), 0);
  assert.equal(index.peek(), 'm0');
  assert.deepEqual(drain(index), [...times].sort((a, b) => a - b).map((t) => `m${t}`));
  assert.equal(index.size, 0);
  assert.equal(index.peekTime(), Infinity);
  assert.equal(index.peek(), undefined);
});

test('popDue takes only what is due at now, and leaves the rest', () => {
  const index = new TimeIndex<string>();
  index.set('a', 100);
  index.set('b', 200);
  index.set('c', 300);
  assert.equal(index.popDue(99), undefined);
  assert.equal(index.size, 3);
  assert.equal(index.popDue(200), 'a');
  assert.equal(index.popDue(200), 'b', 'at == now is due');
  assert.equal(index.popDue(200), undefined);
  assert.equal(index.peek(), 'c');
  assert.equal(index.timeOf('c'), 300);
  assert.equal(index.timeOf('a'), undefined, 'a popped item is out of the index');
});

test('ties: items due at the same instant come out in the order they were scheduled', () => {
  const index = new TimeIndex<number>();
  for (let i = 0; i < 1000; i++) index.set(i, i % 2 === 0 ? 5 : 7);
  const out = drain(index);
  assert.deepEqual(out.slice(0, 500), Array.from({ length: 500 }, (_, k) => 2 * k));
  assert.deepEqual(out.slice(500), Array.from({ length: 500 }, (_, k) => 2 * k + 1));
});

test('removal: a deleted item never comes out, and the others keep their order', () => {
  const index = new TimeIndex<string>();
  for (let i = 0; i < 100; i++) index.set(`m${i}`, i);
  assert.equal(index.delete('m0'), true, 'the earliest');
  assert.equal(index.delete('m99'), true, 'the last slot of the heap');
  assert.equal(index.delete('m50'), true, 'one in the middle');
  assert.equal(index.delete('m50'), false, 'twice: not there any more');
  assert.equal(index.delete('nope'), false);
  assert.equal(index.has('m50'), false);
  assert.equal(index.size, 97);
  assert.equal(index.peek(), 'm1');
  const expected = Array.from({ length: 100 }, (_, i) => `m${i}`).filter((m) => !['m0', 'm50', 'm99'].includes(m));
  assert.deepEqual(drain(index), expected);
});

test('reschedule: an item moved earlier or later comes out at its new time, once', () => {
  const index = new TimeIndex<string>();
  for (let i = 0; i < 10; i++) index.set(`m${i}`, (i + 1) * 10);
  index.set('m9', 5); // later → earliest (a retry now)
  index.set('m0', 1000); // earliest → last (a deferral)
  index.set('m4', 60); // m5's time: behind m5, which was there first
  index.set('m3', 60);
  assert.equal(index.size, 10, 'moving is not adding');
  assert.equal(index.timeOf('m9'), 5);
  assert.deepEqual(drain(index), ['m9', 'm1', 'm2', 'm5', 'm4', 'm3', 'm6', 'm7', 'm8', 'm0']);
});

test('100,000 entries with reschedules and deletions: every survivor once, in time order', () => {
  const random = rng(12);
  const index = new TimeIndex<number>();
  const N = 100_000;
  const at = new Map<number, number>();
  for (let i = 0; i < N; i++) {
    const t = Math.floor(random() * 3_600_000);
    index.set(i, t);
    at.set(i, t);
  }
  // A fifth rescheduled (half of them to a time already taken), a tenth deleted.
  for (let k = 0; k < N / 5; k++) {
    const i = Math.floor(random() * N);
    const t = k % 2 ? Math.floor(random() * 3_600_000) : at.get(Math.floor(random() * N)) ?? 0;
    index.set(i, t);
    at.set(i, t);
  }
  for (let k = 0; k < N / 10; k++) {
    const i = Math.floor(random() * N);
    assert.equal(index.delete(i), at.delete(i));
  }
  assert.equal(index.size, at.size);
  // Taken out in steps of "now", as timer wake-ups would.
  const out: number[] = [];
  for (let now = 0; index.size > 0; now += 60_000) {
    for (let i = index.popDue(now); i !== undefined; i = index.popDue(now)) {
      assert.ok(at.get(i)! <= now, 'nothing comes out before its time');
      out.push(i);
    }
    assert.ok(index.peekTime() > now, 'everything due at now was taken');
  }
  assert.equal(out.length, at.size);
  assert.equal(new Set(out).size, out.length, 'no item twice');
  for (let k = 1; k < out.length; k++) assert.ok(at.get(out[k - 1]!)! <= at.get(out[k]!)!, `in time order at ${k}`);
});

test('items are compared by identity: two equal-looking objects are two entries', () => {
  const index = new TimeIndex<{ id: string }>();
  const a = { id: 'x' };
  const b = { id: 'x' };
  index.set(a, 2);
  index.set(b, 1);
  assert.equal(index.size, 2);
  assert.equal(index.popDue(10), b);
  assert.equal(index.popDue(10), a);
});
