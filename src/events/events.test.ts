import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchingSubscriber, EventIds, EventStream, sourceOf, type MessageEvent } from './events.ts';
import type { Envelope, QueuedMessage } from '../spool/types.ts';

function message(over: Partial<Envelope> = {}): QueuedMessage {
  const envelope: Envelope = { id: 'QEV1', sender: 'a@tern.test', recipients: [{ address: 'b@x.test', original: 'b@x.test' }, { address: 'c@x.test', original: 'c@x.test' }], receivedAt: 0, smtputf8: false, ...over };
  return { envelope, state: { attempts: 0, nextAttempt: 0, status: ['pending', 'pending'], lastReply: [null, null] }, bodyLength: 1, size: 1, recovered: false };
}

test('event ids: fixed width, strictly increasing within a process even when the clock steps back; distinct processes never collide', () => {
  let now = 1_700_000_000_000;
  const ids = new EventIds(() => now);
  const out: string[] = [];
  for (let i = 0; i < 5; i++) out.push(ids.next());
  now -= 5000; // NTP steps the clock back
  for (let i = 0; i < 5; i++) out.push(ids.next());
  now += 60_000;
  out.push(ids.next());
  assert.ok(out.every((id) => id.length === 20 && /^[0-9a-hjkmnp-tv-z]+$/.test(id)), out.join(' '));
  for (let i = 1; i < out.length; i++) assert.ok(out[i - 1]! < out[i]!, `${out[i - 1]} < ${out[i]}`);
  // A restart (a new generator) in the same millisecond: same time prefix, another process tag.
  const again = new EventIds(() => now);
  assert.notEqual(again.next(), new EventIds(() => now).next());
  // Time first: an id made a millisecond later sorts after, whatever the process.
  const later = new EventIds(() => now + 1).next();
  assert.ok(later > out.at(-1)!);
});

test('emit: nothing is built without subscribers; one shared event per call to every subscriber, in order; a throwing subscriber is reported, the others still run', () => {
  const errors: unknown[] = [];
  const stream = new EventStream({ onError: (e) => errors.push(e) });
  const msg = message({ client: { ip: '127.0.0.1', role: 'submission' } });
  assert.equal(stream.active, false);
  assert.equal(stream.emit('queued', msg, 0), null);
  const a: [MessageEvent, number][] = [];
  const b: MessageEvent[] = [];
  stream.subscribe((e, m, i) => {
    assert.equal(m, msg);
    a.push([e, i]);
  });
  stream.subscribe(() => {
    throw new Error('broken subscriber');
  });
  const unsubscribe = stream.subscribe((e) => void b.push(e));
  const reply = { code: 451, enhanced: '4.2.2', text: 'mailbox full' };
  const e1 = stream.emit('queued', msg, 0)!;
  const e2 = stream.emit('deferred', msg, 1, 1, { reply, relay: { host: 'mx.x.test', ip: '192.0.2.1', port: 25 }, tls: null }, 'mx')!;
  assert.deepEqual(a.map(([e, i]) => [e.type, i]), [['queued', 0], ['deferred', 1]]);
  assert.equal(b[1], e2, 'the same object for every subscriber');
  assert.equal(errors.length, 2);
  assert.deepEqual(e1, { id: e1.id, type: 'queued', timestamp: e1.timestamp, queueId: 'QEV1', recipient: 'b@x.test', data: { attempt: null, relay: null, tls: null, reply: null, bounceClass: null, source: 'submission', tags: null, transport: null } });
  assert.deepEqual(e2.data, { attempt: 1, relay: { host: 'mx.x.test', ip: '192.0.2.1', port: 25 }, tls: null, reply, bounceClass: 'mailbox-full', source: 'submission', tags: null, transport: 'mx' });
  assert.equal(e2.recipient, 'c@x.test');
  unsubscribe();
  stream.emit('delivered', msg, 0, 2, { reply: { code: 250, enhanced: '2.0.0', text: 'ok' }, relay: null, tls: null }, 'maildir');
  assert.equal(b.length, 2, 'unsubscribed');
  assert.equal(a.at(-1)![0].data.bounceClass, null, 'a success has no bounce class');
});

test('source: as set, else from the listener role; mail made inside Tern from the null sender is a bounce', () => {
  assert.equal(sourceOf(message({ source: 'api' }).envelope), 'api');
  assert.equal(sourceOf(message({ client: { ip: '192.0.2.1', role: 'smtp' } }).envelope), 'smtp');
  assert.equal(sourceOf(message({ client: { ip: '192.0.2.1', role: 'submissions' } }).envelope), 'submission');
  assert.equal(sourceOf(message({ sender: '', client: { ip: '127.0.0.1', helo: 'localhost' } }).envelope), 'bounce');
  assert.equal(sourceOf(message({ sender: '', client: { ip: '192.0.2.1', role: 'smtp' } }).envelope), 'smtp', 'a bounce from outside arrived by SMTP');
});

test('BatchingSubscriber: one write per turn, in order, never two writes at once; drain waits for everything', async () => {
  const writes: string[][] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const sink = new BatchingSubscriber(async (batch) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    writes.push(batch.map((e) => e.id));
    await new Promise((r) => setTimeout(r, 20));
    inFlight--;
  });
  const stream = new EventStream();
  stream.subscribe(sink.subscriber);
  const msg = message();
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push(stream.emit('queued', msg, 0)!.id);
  await new Promise((r) => setImmediate(r));
  // A write is in flight: these gather into the next batch.
  for (let i = 0; i < 4; i++) ids.push(stream.emit('delivered', msg, 0)!.id);
  await new Promise((r) => setTimeout(r, 5));
  ids.push(stream.emit('delivered', msg, 1)!.id);
  await sink.drain();
  assert.deepEqual(writes.flat(), ids, 'every event once, in order');
  assert.equal(writes[0]!.length, 3, 'the first turn as one batch');
  assert.equal(writes.length, 2, 'what came during the first write went in one more');
  assert.equal(maxInFlight, 1);

  // A failed write is reported; later events still flow.
  const errors: unknown[] = [];
  let fail = true;
  const got: number[] = [];
  const flaky = new BatchingSubscriber((batch) => {
    if (fail) {
      fail = false;
      throw new Error('disk full');
    }
    got.push(batch.length);
  }, (e) => errors.push(e));
  stream.subscribe(flaky.subscriber);
  stream.emit('queued', msg, 0);
  await flaky.drain();
  stream.emit('queued', msg, 1);
  await flaky.drain();
  assert.equal(errors.length, 1);
  assert.deepEqual(got, [1]);
});

test('BatchingSubscriber with delayMs: gathers across turns up to the delay, or writes at once at maxBatch; drain does not wait for the timer', async () => {
  const writes: number[] = [];
  const sink = new BatchingSubscriber((batch) => void writes.push(batch.length), () => {}, { delayMs: 40, maxBatch: 5 });
  const stream = new EventStream();
  stream.subscribe(sink.subscriber);
  const msg = message();
  stream.emit('queued', msg, 0);
  await new Promise((r) => setImmediate(r));
  stream.emit('queued', msg, 1);
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(writes, [], 'nothing written before the delay');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(writes, [2], 'both turns in one write');
  for (let i = 0; i < 5; i++) stream.emit('delivered', msg, 0);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes, [2, 5], 'a full batch goes on the next turn, not after the delay');
  stream.emit('delivered', msg, 1);
  const t0 = Date.now();
  await sink.drain();
  assert.deepEqual(writes, [2, 5, 1]);
  assert.ok(Date.now() - t0 < 30, 'drain writes now');
});

test('BatchingSubscriber with delayMs and a slow asynchronous write: what gathers meanwhile waits out the delay from that write\'s start, not a new commit at once', async () => {
  const starts: number[] = [];
  const sizes: number[] = [];
  const sink = new BatchingSubscriber(
    async (batch) => {
      starts.push(performance.now());
      sizes.push(batch.length);
      await new Promise((r) => setTimeout(r, 15)); // a commit the event loop does not wait for
    },
    () => {},
    { delayMs: 80, maxBatch: 100 },
  );
  const stream = new EventStream();
  stream.subscribe(sink.subscriber);
  const msg = message();
  stream.emit('queued', msg, 0);
  await new Promise((r) => setTimeout(r, 90)); // the first write starts at about 80 ms and takes 15
  // Events during the first write and after it: one more write, 80 ms after the first began.
  stream.emit('delivered', msg, 0);
  await new Promise((r) => setTimeout(r, 20));
  stream.emit('delivered', msg, 1);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(sizes, [1, 2], 'the two later events in one write');
  assert.ok(starts[1]! - starts[0]! >= 75, `the second write waited for the delay (${Math.round(starts[1]! - starts[0]!)} ms after the first)`);
  await sink.drain();
});
