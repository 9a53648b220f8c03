// The scheduler's time index (issue 12, item 5): a wake-up costs O(due),
// not O(queue). Proved without timing: every queued message's state and
// envelope are wrapped in a Proxy that records which messages the
// scheduler looks at, and a wake-up with 10 of 100,000 messages due must
// look at those 10 and no other. Hold, release, retry, delete and deferral
// go through the same index.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { Scheduler, WAKE_BATCH } from './scheduler.ts';
import type { Spool } from '../spool/spool.ts';
import type { DeliveryResult, Router, Transport } from '../delivery/types.ts';
import type { QueuedMessage } from '../spool/types.ts';
import { silentLogger } from '../util/log.ts';

const HOUR = 3_600_000;
const LATER = { code: 451, enhanced: '4.3.0', text: 'later' };
const OK: DeliveryResult = { status: 'ok', reply: { code: 250, enhanced: '2.0.0', text: 'ok' }, relay: null, tls: null, successDsn: 'delivered' };
const TEMPFAIL: DeliveryResult = { status: 'tempfail', reply: LATER, relay: null, tls: null, successDsn: 'none' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, fn: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Messages the scheduler has read anything of (state or envelope) since the last reset. */
class Watch {
  touched = new Set<string>();
  on = true;

  /** A message tried once already, next due at `nextAttempt`, whose reads are recorded. */
  message(id: string, nextAttempt: number): QueuedMessage {
    const record = <T extends object>(o: T): T =>
      new Proxy(o, {
        get: (target, key, receiver) => {
          if (this.on) this.touched.add(id);
          return Reflect.get(target, key, receiver) as unknown;
        },
      });
    return {
      envelope: record({
        id,
        sender: 's@x.test',
        receivedAt: Date.now() - HOUR,
        smtputf8: false,
        recipients: [{ address: `${id}@tern.test`, original: `${id}@tern.test`, mailbox: { domain: 'tern.test', localPart: id } }],
      }),
      state: record({ attempts: 1, nextAttempt, status: ['pending' as const], lastReply: [LATER] }),
      bodyLength: 10,
      size: 10,
      recovered: false,
    };
  }
}

/** A spool stub (nothing on disk) and a local transport that records each delivery. */
function setup(results: (id: string) => DeliveryResult = () => OK, retrySchedule = [HOUR]) {
  const delivered: string[] = [];
  const removed: string[] = [];
  const spool = {
    async writeState() {},
    async remove(id: string) {
      removed.push(id);
    },
    openMessage: () => Readable.from([Buffer.from('Subject: t\r\n\r\nx\r\n')]),
  } as unknown as Spool;
  const transport: Transport = {
    name: 'fake',
    async deliver(job) {
      const id = job.msg.envelope.id;
      delivered.push(id);
      return job.indices.map(() => results(id));
    },
  };
  const router: Router = { route: () => ({ key: 'fake', limit: 20, transport }), close: async () => {} };
  const scheduler = new Scheduler({
    spool,
    router,
    retrySchedule,
    maxLifetime: 100 * HOUR,
    log: silentLogger,
  });
  return { scheduler, delivered, removed };
}

test('a wake-up with 10 of 100,000 messages due looks at those 10 only', { timeout: 120_000 }, async () => {
  const watch = new Watch();
  const t = setup();
  const due = new Set<string>();
  const later: string[] = [];
  for (let i = 0; i < 100_000; i++) {
    const id = `M${String(i).padStart(6, '0')}`;
    // Ten spread over the queue's ids; the others due in an hour or more.
    if (i % 10_000 === 5_000) due.add(id);
    else later.push(id);
  }
  for (const [i, id] of later.entries()) t.scheduler.add(watch.message(id, Date.now() + HOUR + i));
  // The due ones go in last, so they are not due before everything is in; a few ms apart: several wake-ups.
  const soon = Date.now() + 200;
  for (const [k, id] of [...due].entries()) t.scheduler.add(watch.message(id, soon + k * 7));
  assert.equal(t.scheduler.size, 100_000);
  assert.deepEqual(t.delivered, [], 'nothing due yet');
  watch.touched.clear();
  await until('the 10 due deliveries', () => t.delivered.length === 10);
  await t.scheduler.idle();
  assert.deepEqual(new Set(t.delivered), due);
  assert.deepEqual(watch.touched, due, 'no message but the due ones was examined');
  assert.equal(t.scheduler.size, 99_990);
  // And the next hour's worth stays untouched while it waits.
  watch.touched.clear();
  await sleep(100);
  assert.equal(watch.touched.size, 0);
  await t.scheduler.stop();
});

test('hold and delete take a message out of the index; release and retry bring it back, once', async () => {
  const watch = new Watch();
  const t = setup();
  const at = Date.now() + 150;
  const ids = ['held', 'deleted', 'retried', 'released', 'plain'];
  for (const id of ids) t.scheduler.add(watch.message(id, id === 'retried' ? Date.now() + HOUR : at));
  assert.equal(await t.scheduler.hold('held'), true);
  assert.equal(await t.scheduler.hold('released'), true);
  assert.equal(await t.scheduler.delete('deleted'), true);
  assert.deepEqual(t.removed, ['deleted']);
  assert.deepEqual(t.scheduler.retry('retried'), { scheduled: 1, held: 0 });
  await until('the retried message', () => t.delivered.includes('retried'));
  watch.touched.clear();
  await until('the plain message at its time', () => t.delivered.includes('plain'));
  await sleep(50);
  assert.deepEqual(t.delivered, ['retried', 'plain'], 'the held and the deleted one were not tried');
  assert.ok(!watch.touched.has('held') && !watch.touched.has('deleted'), `not examined at their old time: ${[...watch.touched].join(', ')}`);
  assert.equal(await t.scheduler.release('released'), true);
  await until('the released message', () => t.delivered.includes('released'));
  await t.scheduler.idle();
  assert.deepEqual(t.delivered.sort(), ['plain', 'released', 'retried'], 'each once');
  assert.equal(t.scheduler.size, 1, 'only the held message is left');
  await t.scheduler.stop();
});

test('a message retried now is not tried again at its old time', async () => {
  const watch = new Watch();
  const t = setup();
  t.scheduler.add(watch.message('early', Date.now() + 100));
  assert.deepEqual(t.scheduler.retry('early'), { scheduled: 1, held: 0 });
  await t.scheduler.idle();
  await sleep(200);
  assert.deepEqual(t.delivered, ['early']);
  await t.scheduler.stop();
});

test('a deferral files the message under its new time: tried again then, and not before', async () => {
  const watch = new Watch();
  let tries = 0;
  // Tempfail twice, then accept; the schedule is 80 ms (±20 % jitter).
  const t = setup(() => (++tries < 3 ? TEMPFAIL : OK), [80]);
  const start = Date.now();
  t.scheduler.add(watch.message('m', start));
  await until('the third attempt', () => t.delivered.length === 3);
  await t.scheduler.idle();
  // Two waits of at least 80 ms − 20 % each.
  assert.ok(Date.now() - start >= 2 * 64, `three attempts took ${Date.now() - start} ms`);
  assert.equal(t.scheduler.size, 0);
  await t.scheduler.stop();
});

test(`more due at one instant than one wake-up starts (${WAKE_BATCH}): all are started, each once`, { timeout: 60_000 }, async () => {
  const watch = new Watch();
  const t = setup();
  const at = Date.now() + 200;
  const n = 3 * WAKE_BATCH + 7;
  for (let i = 0; i < n; i++) t.scheduler.add(watch.message(`B${i}`, at));
  await until('every delivery', () => t.delivered.length === n);
  await t.scheduler.idle();
  assert.equal(new Set(t.delivered).size, n);
  assert.deepEqual(t.delivered.slice(0, 3), ['B0', 'B1', 'B2'], 'in the order they were scheduled');
  await t.scheduler.stop();
});

test('stop: no wake-up starts anything afterwards', async () => {
  const watch = new Watch();
  const t = setup();
  t.scheduler.add(watch.message('late', Date.now() + 50));
  await t.scheduler.stop();
  await sleep(150);
  assert.deepEqual(t.delivered, []);
});

test('listing() summarizes as it is consumed: a message deleted before its turn is left out', async () => {
  const watch = new Watch();
  const t = setup();
  for (const id of ['A', 'B', 'C']) t.scheduler.add(watch.message(id, Date.now() + HOUR));
  watch.touched.clear();
  const it = t.scheduler.listing();
  assert.equal(it.next().value?.id, 'A');
  assert.deepEqual(watch.touched, new Set(['A']), 'only the first message summarized so far');
  assert.equal(await t.scheduler.delete('C'), true);
  assert.deepEqual([...it].map((m) => m.id), ['B']);
  assert.deepEqual(t.scheduler.list().map((m) => m.id), ['A', 'B']);
  await t.scheduler.stop();
});
