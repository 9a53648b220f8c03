import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Scheduler, type LocalTransport } from './scheduler.ts';
import { Spool } from '../spool/spool.ts';
import type { DeliveryResult } from '../delivery/types.ts';
import type { Envelope, QueuedMessage } from '../spool/types.ts';
import { silentLogger } from '../util/log.ts';

const MIN = 60_000;

async function queueOne(spool: Spool, locals: string[]): Promise<QueuedMessage> {
  const env: Envelope = {
    id: spool.newId(),
    sender: 's@x.test',
    receivedAt: Date.now(),
    smtputf8: false,
    recipients: locals.map((l) => ({ address: `${l}@tern.test`, original: `${l}@tern.test`, mailbox: { domain: 'tern.test', localPart: l } })),
  };
  const w = spool.create(env);
  w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
  return w.commit();
}

function setup(results: Record<string, DeliveryResult[]>) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-sched-'));
  const spool = new Spool({ dir, fsync: false });
  spool.init();
  const calls: string[] = [];
  const maildir: LocalTransport = {
    async deliver(msg, _index, to) {
      calls.push(to.localPart);
      // The transport can read the queued message.
      const chunks: Buffer[] = [];
      for await (const c of msg.open() as Readable) chunks.push(c as Buffer);
      assert.match(Buffer.concat(chunks).toString(), /^Subject: t\r\n/);
      return results[to.localPart]!.shift() ?? { kind: 'ok', reply: '250 ok' };
    },
  };
  // The fake clock starts a little ahead of the real one, so freshly queued messages are due.
  let now = Date.now() + 1000;
  const scheduler = new Scheduler({
    spool, maildir, retrySchedule: [1 * MIN, 5 * MIN, 15 * MIN], maxLifetime: 60 * MIN, log: silentLogger,
    now: () => now, random: () => 0.5,
  });
  return { dir, spool, scheduler, calls, now: () => now, advance: (ms: number) => (now += ms), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

test('a tempfail is retried on schedule and delivered recipients are never retried', async () => {
  const t = setup({ alice: [], bob: [{ kind: 'tempfail', reply: '451 4.3.0 disk full' }] });
  try {
    const msg = await queueOne(t.spool, ['alice', 'bob']);
    t.scheduler.add(msg);
    await t.scheduler.idle();
    assert.deepEqual(t.calls, ['alice', 'bob']);
    const state = t.spool.readState(msg.envelope.id)!;
    assert.deepEqual(state.status, ['delivered', 'pending']);
    assert.equal(state.attempts, 1);
    assert.equal(state.lastError[1], '451 4.3.0 disk full');
    // random() = 0.5 → no jitter: the first step of the schedule.
    assert.equal(state.nextAttempt, t.now() + MIN);
    assert.ok(t.spool.list().includes(msg.envelope.id), 'still queued');

    // A restart (new scheduler over the same spool) resumes from the state file.
    const { messages } = await t.spool.recover();
    assert.equal(messages.length, 1);
    assert.deepEqual(messages[0]!.state.status, ['delivered', 'pending']);
    t.advance(MIN + 1);
    t.scheduler.add(messages[0]!);
    await t.scheduler.idle();
    assert.deepEqual(t.calls, ['alice', 'bob', 'bob']);
    assert.deepEqual(t.spool.list(), [], 'removed once every recipient is final');
  } finally {
    t.cleanup();
  }
});

test('retry delays follow the schedule, repeat the last step, and carry ±20% jitter', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-sched-'));
  const mk = (r: number) =>
    new Scheduler({ spool: new Spool({ dir }), maildir: { deliver: async () => ({ kind: 'ok', reply: '' }) }, retrySchedule: [MIN, 5 * MIN], maxLifetime: 1, log: silentLogger, random: () => r });
  assert.equal(mk(0.5).retryDelay(1), MIN);
  assert.equal(mk(0.5).retryDelay(2), 5 * MIN);
  assert.equal(mk(0.5).retryDelay(9), 5 * MIN);
  assert.equal(mk(0).retryDelay(1), 0.8 * MIN);
  assert.equal(mk(1).retryDelay(1), 1.2 * MIN);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a message past maxLifetime is given up', async () => {
  const t = setup({ bob: [] });
  try {
    const msg = await queueOne(t.spool, ['bob']);
    t.advance(61 * MIN);
    t.scheduler.add(msg);
    await t.scheduler.idle();
    assert.deepEqual(t.calls, [], 'no delivery attempted after expiry');
    assert.deepEqual(t.spool.list(), []);
  } finally {
    t.cleanup();
  }
});
