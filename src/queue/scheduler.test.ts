import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Scheduler, type Notice } from './scheduler.ts';
import { Spool } from '../spool/spool.ts';
import type { DeliveryResult, Transport } from '../delivery/types.ts';
import { ok, perRecipient, router, tempfail } from '../../test/helpers/transports.ts';
import { EventStream } from '../events/events.ts';
import { logDeliveries } from '../events/log.ts';
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
  const maildir: Transport = perRecipient('maildir', async (job, i) => {
    const to = job.msg.envelope.recipients[i]!.mailbox!;
    calls.push(to.localPart);
    // The transport can read the queued message.
    const chunks: Buffer[] = [];
    for await (const c of job.open() as Readable) chunks.push(c as Buffer);
    assert.match(Buffer.concat(chunks).toString(), /^Subject: t\r\n/);
    return results[to.localPart]!.shift() ?? ok();
  });
  // The fake clock starts a little ahead of the real one, so freshly queued messages are due.
  let now = Date.now() + 1000;
  const scheduler = new Scheduler({
    spool, router: router({ maildir }), retrySchedule: [1 * MIN, 5 * MIN, 15 * MIN], maxLifetime: 60 * MIN, log: silentLogger,
    now: () => now, random: () => 0.5,
  });
  return { dir, spool, scheduler, calls, maildir, now: () => now, advance: (ms: number) => (now += ms), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

test('a tempfail is retried on schedule and delivered recipients are never retried', async () => {
  const t = setup({ alice: [], bob: [tempfail('disk full')] });
  try {
    const msg = await queueOne(t.spool, ['alice', 'bob']);
    t.scheduler.add(msg);
    await t.scheduler.idle();
    assert.deepEqual(t.calls, ['alice', 'bob']);
    const state = t.spool.readState(msg.envelope.id)!;
    assert.deepEqual(state.status, ['delivered', 'pending']);
    assert.equal(state.attempts, 1);
    assert.deepEqual(state.lastReply[1], { code: 451, enhanced: '4.3.0', text: 'disk full' });
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
    new Scheduler({ spool: new Spool({ dir }), router: router({ maildir: perRecipient('maildir', () => ok()) }), retrySchedule: [MIN, 5 * MIN], maxLifetime: 1, log: silentLogger, random: () => r });
  assert.equal(mk(0.5).retryDelay(1), MIN);
  assert.equal(mk(0.5).retryDelay(2), 5 * MIN);
  assert.equal(mk(0.5).retryDelay(9), 5 * MIN);
  assert.equal(mk(0).retryDelay(1), 0.8 * MIN);
  assert.equal(mk(1).retryDelay(1), 1.2 * MIN);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('past maxLifetime, a tempfail becomes a failure (with a notice for the bounce); a success still counts', async () => {
  const t = setup({ bob: [tempfail('still broken')], alice: [] });
  const notices: Notice[] = [];
  const scheduler = new Scheduler({
    spool: t.spool, router: router({ maildir: t.maildir }), retrySchedule: [MIN], maxLifetime: 60 * MIN, log: silentLogger,
    now: () => t.now() + 61 * MIN, random: () => 0.5, notify: async (n) => void notices.push(n),
  });
  try {
    const msg = await queueOne(t.spool, ['alice', 'bob']);
    scheduler.add(msg);
    await scheduler.idle();
    assert.deepEqual(t.calls, ['alice', 'bob'], 'one last attempt is made');
    assert.deepEqual(t.spool.list(), [], 'given up and removed');
    const failed = notices.find((n) => n.kind === 'failed')!;
    assert.deepEqual(failed.recipients.map((r) => r.index), [1]);
    // Structured: the 4.4.7 status is the reply's enhanced code (RFC 3463), never text to parse.
    const expiry = failed.recipients[0]!.reply!;
    assert.deepEqual([expiry.code, expiry.enhanced], [451, '4.4.7']);
    assert.match(expiry.text, /^expired after .* in the queue; last reply: 451 4\.3\.0 still broken$/);
    assert.deepEqual(notices.find((n) => n.kind === 'delivered')!.recipients.map((r) => r.index), [0]);
  } finally {
    t.cleanup();
  }
});

test('one delay warning once a message has waited delayWarning, and not twice', async () => {
  const t = setup({ bob: [tempfail('a'), tempfail('b'), ok()] });
  const notices: Notice[] = [];
  let now = Date.now() + 1000;
  const scheduler = new Scheduler({
    spool: t.spool, router: router({ maildir: t.maildir }), retrySchedule: [MIN], maxLifetime: 600 * MIN, delayWarning: 30 * MIN, log: silentLogger,
    now: () => now, random: () => 0.5, notify: async (n) => void notices.push(n),
  });
  try {
    const msg = await queueOne(t.spool, ['bob']);
    scheduler.add(msg);
    await scheduler.idle();
    assert.equal(notices.length, 0, 'too early for a warning');
    now += 31 * MIN;
    await scheduler.retry(msg.envelope.id);
    await scheduler.idle();
    assert.deepEqual(notices.map((n) => n.kind), ['delayed']);
    assert.equal(notices[0]!.willRetryUntil, msg.envelope.receivedAt + 600 * MIN);
    now += 2 * MIN;
    await scheduler.retry(msg.envelope.id);
    await scheduler.idle();
    assert.deepEqual(notices.map((n) => n.kind), ['delayed', 'delivered']);
  } finally {
    t.cleanup();
  }
});

test('hold stops attempts until release; delete removes without a bounce', async () => {
  const t = setup({ bob: [tempfail('a')] });
  try {
    const msg = await queueOne(t.spool, ['bob']);
    const id = msg.envelope.id;
    assert.equal(await t.scheduler.hold(id), false, 'unknown id');
    msg.state.nextAttempt = Date.now() + 3_600_000;
    t.scheduler.add(msg);
    assert.equal(await t.scheduler.hold(id), true);
    await t.scheduler.retry(id);
    await t.scheduler.idle();
    assert.deepEqual(t.calls, [], 'held: nothing tried');
    assert.equal(t.scheduler.list()[0]!.state, 'held');
    assert.equal(t.spool.readState(id)!.held, true, 'hold is on disk');
    await t.scheduler.release(id);
    await t.scheduler.idle();
    assert.deepEqual(t.calls, ['bob']);
    assert.equal(await t.scheduler.delete(id), true);
    assert.deepEqual(t.spool.list(), []);
    assert.equal(t.scheduler.size, 0);
  } finally {
    t.cleanup();
  }
});

test('fresh mail is not stuck behind a backlog of retries to the same destination', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-sched-'));
  const spool = new Spool({ dir, fsync: false });
  spool.init();
  const order: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const remote: Transport = {
    name: 'mx',
    async deliver(job) {
      order.push(job.msg.envelope.recipients[0]!.original);
      await gate;
      return job.indices.map(() => ok('ok', 'none'));
    },
  };
  const scheduler = new Scheduler({ spool, router: router({ maildir: perRecipient('maildir', () => ok()), remote, perDestination: 1 }), retrySchedule: [MIN], maxLifetime: 600 * MIN, log: silentLogger });
  try {
    const mk = async (tag: string, attempts: number) => {
      const env: Envelope = { id: spool.newId(), sender: 's@x.test', receivedAt: Date.now() - 1000, smtputf8: false, recipients: [{ address: 'r@remote.test', original: tag }] };
      const w = spool.create(env);
      w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
      const m = await w.commit();
      m.state.attempts = attempts;
      m.state.nextAttempt = 0;
      return m;
    };
    // Many deferred messages first, then new ones: with one slot, service must alternate.
    for (let i = 0; i < 5; i++) scheduler.add(await mk(`old${i}`, 3));
    for (let i = 0; i < 2; i++) scheduler.add(await mk(`new${i}`, 0));
    release();
    await scheduler.idle();
    assert.equal(order.length, 7);
    assert.ok(order.indexOf('new0') <= 2, `a new message went early: ${order.join(' ')}`);
    assert.ok(order.indexOf('new1') <= 4, `and the second too: ${order.join(' ')}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('discard domains: recipients there count as delivered without a Maildir write, logged as relay "discard"', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-sched-'));
  try {
    const spool = new Spool({ dir, fsync: false });
    spool.init();
    const written: string[] = [];
    const lines: Record<string, unknown>[] = [];
    const log = { ...silentLogger, info: (m: string, f?: Record<string, unknown>) => void (m === 'delivery' && lines.push(f!)) };
    // The delivery log is a subscriber of the event stream.
    const events = new EventStream();
    logDeliveries(events, log);
    const scheduler = new Scheduler({
      spool,
      router: router({ maildir: perRecipient('maildir', (job, i) => (written.push(job.msg.envelope.recipients[i]!.mailbox!.localPart), ok())), discard: (domain) => domain === 'sink.test' }),
      events,
      retrySchedule: [MIN], maxLifetime: 60 * MIN, log,
    });
    const env: Envelope = {
      id: spool.newId(), sender: 's@x.test', receivedAt: Date.now(), smtputf8: false,
      recipients: [
        { address: 'a@sink.test', original: 'a@sink.test', mailbox: { domain: 'sink.test', localPart: 'a' } },
        { address: 'b@tern.test', original: 'b@tern.test', mailbox: { domain: 'tern.test', localPart: 'b' } },
      ],
    };
    const w = spool.create(env);
    w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
    scheduler.add(await w.commit());
    await scheduler.idle();
    assert.deepEqual(written, ['b'], 'only the Maildir domain was written');
    assert.deepEqual(lines.map((l) => [l.to, l.result, l.relay]), [['a@sink.test', 'ok', 'discard'], ['b@tern.test', 'ok', 'maildir']]);
    assert.deepEqual(spool.list(), [], 'finished and removed');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
