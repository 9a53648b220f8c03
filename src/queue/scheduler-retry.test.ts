// `tern queue retry --all` against a large queue: the answer comes at once,
// the work follows in batches, held mail stays held (issue 11, break 9;
// issue 18). The spool is a stub whose state writes take a few
// milliseconds each, as an fsync does: a retry that waits for one write per
// message cannot answer a queue of thousands in time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { Scheduler, RETRY_BATCH } from './scheduler.ts';
import type { Spool } from '../spool/spool.ts';
import type { QueuedMessage } from '../spool/types.ts';
import { silentLogger } from '../util/log.ts';
import { ok, perRecipient, router } from '../../test/helpers/transports.ts';

const HOUR = 3_600_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function deferred(i: number, held: boolean): QueuedMessage {
  return {
    envelope: {
      id: `M${String(i).padStart(6, '0')}`,
      sender: 's@x.test',
      receivedAt: Date.now() - HOUR,
      smtputf8: false,
      recipients: [{ address: `u${i}@tern.test`, original: `u${i}@tern.test`, mailbox: { domain: 'tern.test', localPart: `u${i}` } }],
    },
    // Tried once already and due again in an hour.
    state: { attempts: 1, nextAttempt: Date.now() + HOUR, status: ['pending'], lastReply: [{ code: 451, enhanced: '4.3.0', text: 'later' }], held },
    bodyLength: 10,
    size: 10,
    recovered: false,
  };
}

function slowSpool(): { spool: Spool; stateWrites: () => number } {
  let writes = 0;
  const stub = {
    async writeState() {
      writes++;
      await sleep(3);
    },
    async remove() {
      await sleep(0);
    },
    openMessage: () => Readable.from([Buffer.from('Subject: t\r\n\r\nx\r\n')]),
  };
  return { spool: stub as unknown as Spool, stateWrites: () => writes };
}

test('retry of everything answers at once for 4,000 messages, then delivers all but the held ones', { timeout: 60_000 }, async () => {
  const { spool } = slowSpool();
  const delivered: string[] = [];
  const scheduler = new Scheduler({
    spool,
    router: router({ maildir: perRecipient('maildir', (job) => (delivered.push(job.msg.envelope.id), ok())) }),
    retrySchedule: [HOUR],
    maxLifetime: 100 * HOUR,
    log: silentLogger,
  });
  const total = 4000;
  const heldIds = new Set<string>();
  for (let i = 0; i < total; i++) {
    const m = deferred(i, i % 400 === 0);
    if (m.state.held) heldIds.add(m.envelope.id);
    scheduler.add(m);
  }
  assert.equal(delivered.length, 0, 'nothing is due before the retry');

  // The old retry awaited one state write per message: 4,000 × 3 ms before any answer.
  const started = performance.now();
  const answer = await Promise.race([Promise.resolve(scheduler.retry()), sleep(2000).then(() => 'no answer within 2 s' as const)]);
  const took = performance.now() - started;
  assert.deepEqual(answer, { scheduled: total - heldIds.size, held: heldIds.size });
  assert.ok(took < 500, `answered in ${Math.round(took)} ms`);
  assert.ok(total > RETRY_BATCH * 2, 'the test spans several batches');

  await scheduler.idle();
  assert.equal(delivered.length, total - heldIds.size);
  assert.ok(delivered.every((id) => !heldIds.has(id)), 'held messages stay held');
  assert.equal(scheduler.size, heldIds.size);
  await scheduler.stop();
});

test('retry of one message: null when unknown, and a held one is reported held, not scheduled', async () => {
  const { spool, stateWrites } = slowSpool();
  const delivered: string[] = [];
  const scheduler = new Scheduler({
    spool,
    router: router({ maildir: perRecipient('maildir', (job) => (delivered.push(job.msg.envelope.id), ok())) }),
    retrySchedule: [HOUR],
    maxLifetime: 100 * HOUR,
    log: silentLogger,
  });
  const held = deferred(1, true);
  const waiting = deferred(2, false);
  scheduler.add(held);
  scheduler.add(waiting);
  assert.equal(scheduler.retry('NOSUCHID'), null);
  assert.deepEqual(scheduler.retry(held.envelope.id), { scheduled: 0, held: 1 });
  assert.deepEqual(scheduler.retry(waiting.envelope.id), { scheduled: 1, held: 0 });
  await scheduler.idle();
  assert.deepEqual(delivered, [waiting.envelope.id]);
  assert.equal(held.state.nextAttempt > Date.now(), true, 'the held message keeps its retry time');
  assert.ok(stateWrites() === 0, 'the nudge itself writes nothing: the delivery records its outcome (here: removal)');
  await scheduler.stop();
});
