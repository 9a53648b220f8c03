// The scheduler's side of the suppression list (src/queue/scheduler.ts,
// #withoutSuppressed): suppressed remote recipients are never handed to a
// transport, fail with 550 5.7.1 and a 'suppressed' event, and get a DSN
// only when NOTIFY asked for failures.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Scheduler, type Notice } from '../queue/scheduler.ts';
import { Spool } from '../spool/spool.ts';
import type { Envelope, Recipient } from '../spool/types.ts';
import { EventStream, type MessageEvent } from '../events/events.ts';
import { ok, perRecipient, router } from '../../test/helpers/transports.ts';
import { silentLogger } from '../util/log.ts';

function setup(suppressed: Record<string, string>) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-enforce-'));
  const spool = new Spool({ dir, fsync: false });
  spool.init();
  const sent: string[] = [];
  const transport = perRecipient('mx', (job, i) => (sent.push(job.msg.envelope.recipients[i]!.address), ok('queued', 'none')));
  const events = new EventStream();
  const seen: MessageEvent[] = [];
  events.subscribe((e) => void seen.push(e));
  const notices: Notice[] = [];
  const lookups: string[] = [];
  const scheduler = new Scheduler({
    spool,
    router: router({ maildir: transport, remote: transport }),
    events,
    retrySchedule: [60_000],
    maxLifetime: 3_600_000,
    notify: async (n) => void notices.push(n),
    suppressions: {
      lookup: (a) => {
        lookups.push(a);
        const reason = suppressed[a.toLowerCase()];
        return reason === undefined ? null : { reason };
      },
    },
    log: silentLogger,
    now: () => Date.now() + 1000,
  });
  async function queue(recipients: Recipient[]) {
    const env: Envelope = { id: spool.newId(), sender: 'alice@tern.test', receivedAt: Date.now(), smtputf8: false, recipients };
    const w = spool.create(env);
    w.write(Buffer.from('Subject: t\r\n\r\nbody\r\n'));
    const msg = await w.commit();
    scheduler.add(msg);
    await scheduler.idle();
    return msg;
  }
  return { spool, sent, events: seen, notices, lookups, queue, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

test('suppressed remote recipients are not sent to: 550 5.7.1, a suppressed event, a DSN only for an explicit NOTIFY=FAILURE', async () => {
  const t = setup({ 'gone@remote.test': 'hard-bounce', 'asked@remote.test': 'complaint', 'never@remote.test': 'complaint', 'bob@tern.test': 'complaint' });
  try {
    const msg = await t.queue([
      { address: 'Gone@remote.test', original: 'Gone@remote.test' },
      { address: 'asked@remote.test', original: 'asked@remote.test', notify: ['FAILURE'] },
      { address: 'never@remote.test', original: 'never@remote.test', notify: [] },
      { address: 'fine@remote.test', original: 'fine@remote.test' },
      // Local mail is never suppressed.
      { address: 'bob@tern.test', original: 'bob@tern.test', mailbox: { domain: 'tern.test', localPart: 'bob' } },
    ]);
    assert.deepEqual(t.sent.toSorted(), ['bob@tern.test', 'fine@remote.test']);
    assert.ok(!t.lookups.includes('bob@tern.test'), 'local recipients are not even looked up');
    const mine = t.events.filter((e) => e.queueId === msg.envelope.id);
    assert.deepEqual(mine.filter((e) => e.type === 'suppressed').map((e) => [e.recipient, e.data.attempt, e.data.reply]), [
      ['Gone@remote.test', 1, { code: 550, enhanced: '5.7.1', text: 'Recipient is on the suppression list (hard-bounce)' }],
      ['asked@remote.test', 1, { code: 550, enhanced: '5.7.1', text: 'Recipient is on the suppression list (complaint)' }],
      ['never@remote.test', 1, { code: 550, enhanced: '5.7.1', text: 'Recipient is on the suppression list (complaint)' }],
    ]);
    assert.deepEqual(mine.filter((e) => e.type === 'bounced'), []);
    assert.deepEqual(mine.filter((e) => e.type === 'delivered').map((e) => e.recipient).toSorted(), ['bob@tern.test', 'fine@remote.test']);
    const failed = t.notices.filter((n) => n.kind === 'failed');
    assert.equal(failed.length, 1);
    assert.deepEqual(failed[0]!.recipients.map((r) => [r.index, r.reply?.enhanced]), [[1, '5.7.1']]);
    assert.deepEqual(t.spool.list(), [], 'every recipient final: the message is gone');
  } finally {
    t.cleanup();
  }
});

test('a message whose every recipient is suppressed never reaches a transport and leaves the queue', async () => {
  const t = setup({ 'a@remote.test': 'api', 'b@other.test': 'api' });
  try {
    const msg = await t.queue([
      { address: 'a@remote.test', original: 'a@remote.test' },
      { address: 'b@other.test', original: 'b@other.test' },
    ]);
    assert.deepEqual(t.sent, []);
    assert.deepEqual(t.events.filter((e) => e.queueId === msg.envelope.id).map((e) => e.type), ['suppressed', 'suppressed']);
    assert.deepEqual(t.notices, []);
    assert.deepEqual(t.spool.list(), []);
  } finally {
    t.cleanup();
  }
});
