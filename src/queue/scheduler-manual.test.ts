// `tern queue retry` does not count against the retry schedule (issue 18):
// a manual round is shown in `attempts` but does not advance the backoff,
// and a tempfail on it returns to the automatic attempt it brought forward.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Scheduler } from './scheduler.ts';
import { Spool } from '../spool/spool.ts';
import { perRecipient, router, tempfail } from '../../test/helpers/transports.ts';
import type { Envelope } from '../spool/types.ts';
import { silentLogger } from '../util/log.ts';

const MIN = 60_000;

async function setup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-sched-manual-'));
  const spool = new Spool({ dir, fsync: false });
  spool.init();
  let tries = 0;
  let now = Date.now() + 1000;
  /** How long each delivery takes on the fake clock. */
  let deliveryTakes = 0;
  const maildir = perRecipient('maildir', () => (tries++, (now += deliveryTakes), tempfail('mailbox busy')));
  const options = { spool, router: router({ maildir }), retrySchedule: [1 * MIN, 5 * MIN, 15 * MIN, 30 * MIN], maxLifetime: 24 * 60 * MIN, log: silentLogger, now: () => now, random: () => 0.5 };
  const scheduler = new Scheduler(options);
  const env: Envelope = {
    id: spool.newId(),
    sender: 's@x.test',
    receivedAt: Date.now(),
    smtputf8: false,
    recipients: [{ address: 'bob@tern.test', original: 'bob@tern.test', mailbox: { domain: 'tern.test', localPart: 'bob' } }],
  };
  const w = spool.create(env);
  w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
  const msg = await w.commit();
  return {
    spool, scheduler, options, id: env.id, msg,
    tries: () => tries,
    now: () => now,
    advance: (ms: number) => (now += ms),
    slowDeliveries: (ms: number) => (deliveryTakes = ms),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

test('a manual retry is counted in attempts but neither advances the backoff nor pushes the next automatic attempt', async () => {
  const t = await setup();
  try {
    t.scheduler.add(t.msg);
    await t.scheduler.idle();
    // First automatic attempt failed: next one after the first step (1 min; random 0.5 = no jitter).
    let state = t.spool.readState(t.id)!;
    assert.equal(state.attempts, 1);
    const firstAutomatic = state.nextAttempt;
    assert.equal(firstAutomatic, t.now() + MIN);

    // Two manual retries, 10 s apart, both tempfail.
    t.advance(10_000);
    assert.deepEqual(t.scheduler.retry(t.id), { scheduled: 1, held: 0 });
    await t.scheduler.idle();
    t.advance(10_000);
    t.scheduler.retry(t.id);
    await t.scheduler.idle();
    assert.equal(t.tries(), 3, 'both manual retries were tried');
    state = t.spool.readState(t.id)!;
    assert.equal(state.attempts, 3, 'attempts counts every round, manual ones too');
    assert.equal(state.manualAttempts, 2);
    assert.equal(state.nextAttempt, firstAutomatic, 'the automatic attempt stays where it was');
    const shown = t.scheduler.show(t.id)!;
    assert.equal(shown.attempts, 3);
    assert.equal(shown.manualAttempts, 2);

    // The automatic attempt, when due, is the second of the schedule: the next step is 5 min, not 15 or 30.
    t.advance(firstAutomatic - t.now());
    t.scheduler.retry(); // --all with the message already due: the schedule's own round, not a manual one
    await t.scheduler.idle();
    state = t.spool.readState(t.id)!;
    assert.equal(state.attempts, 4);
    assert.equal(state.manualAttempts, 2, 'a retry of a message already due is not manual');
    assert.equal(state.nextAttempt, t.now() + 5 * MIN);

    // A restart keeps the count apart: the backoff still steps by automatic rounds (third step: 15 min).
    const { messages } = await t.spool.recover();
    const again = new Scheduler(t.options);
    t.advance(5 * MIN);
    again.add(messages[0]!);
    await again.idle();
    state = t.spool.readState(t.id)!;
    assert.equal(state.attempts, 5);
    assert.equal(state.nextAttempt, t.now() + 15 * MIN);
  } finally {
    await t.scheduler.stop();
    t.cleanup();
  }
});

test('a manual retry that ends after the automatic time has passed backs off by the automatic count', async () => {
  const t = await setup();
  try {
    t.scheduler.add(t.msg);
    await t.scheduler.idle();
    t.advance(10_000);
    // The manual round takes 2 min: the automatic attempt it brought forward (due 1 min after the first) is past.
    t.slowDeliveries(2 * MIN);
    t.scheduler.retry(t.id);
    await t.scheduler.idle();
    const state = t.spool.readState(t.id)!;
    assert.equal(state.attempts, 2);
    assert.equal(state.manualAttempts, 1);
    // One automatic attempt so far: the first step again (1 min), not the second (5 min).
    assert.equal(state.nextAttempt, t.now() + MIN);
  } finally {
    await t.scheduler.stop();
    t.cleanup();
  }
});
