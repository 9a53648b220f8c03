// The bouncer reads the status of a DSN from the structured reply (its
// enhanced code, RFC 3463), never from reply text; Remote-MTA and the
// diagnostic type come from who gave the reply. A delay warning that was
// queued is a `delayed` event.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { Bouncer } from './bouncer.ts';
import { Directory } from '../policy/directory.ts';
import { EventStream, type MessageEvent } from '../events/events.ts';
import { silentLogger } from '../util/log.ts';
import type { Envelope, QueuedMessage, Recipient } from '../spool/types.ts';
import type { Intake, NewMessage } from '../intake/intake.ts';
import type { Spool } from '../spool/spool.ts';
import type { NoticeRecipient } from '../queue/scheduler.ts';

function harness() {
  const queued: { m: NewMessage; message: Buffer }[] = [];
  const intake = {
    submit: async (m: NewMessage, message: Buffer) => {
      queued.push({ m, message });
      return { envelope: { id: `DSN${queued.length}` } } as QueuedMessage;
    },
  } as unknown as Intake;
  const spool = { openMessage: () => Readable.from([Buffer.from('Subject: s\r\n\r\nbody\r\n')]) } as unknown as Spool;
  const directory = new Directory([{ name: 'tern.test', mailboxes: ['alice'], aliases: {} }] as ConstructorParameters<typeof Directory>[0]);
  const events = new EventStream();
  const seen: MessageEvent[] = [];
  events.subscribe((e) => void seen.push(e));
  const bouncer = new Bouncer({ hostname: 'mx.tern.test', intake, directory, spool, log: silentLogger, events });
  return { bouncer, queued, seen };
}

function message(recipients: Recipient[]): QueuedMessage {
  const envelope: Envelope = { id: 'QBOUNCE', sender: 'alice@tern.test', recipients, receivedAt: Date.UTC(2025, 0, 2), smtputf8: false, client: { ip: '127.0.0.1', role: 'submission' } };
  return { envelope, state: { attempts: 3, nextAttempt: 0, status: recipients.map(() => 'pending'), lastReply: recipients.map(() => null) }, bodyLength: 20, size: 20, recovered: false };
}

/** The per-recipient groups of the message/delivery-status part (RFC 3464 §2.3), unfolded. */
function statusGroups(dsn: Buffer): Record<string, string>[] {
  const text = dsn.toString('utf8');
  const part = text.slice(text.indexOf('Content-Type: message/delivery-status'));
  const body = part.slice(part.indexOf('\r\n\r\n') + 4, part.indexOf('\r\n--'));
  return body
    .replace(/\r\n[ \t]+/g, ' ')
    .split('\r\n\r\n')
    .slice(1)
    .map((g) => Object.fromEntries(g.split('\r\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()])));
}

const rcpt = (address: string, notify?: Recipient['notify']): Recipient => ({ address, original: address, notify });
const mx = { host: 'mx.remote.test', ip: '192.0.2.7', port: 25 };

test('failed DSN: Status is the reply\'s enhanced code, never read from its text; Remote-MTA and "smtp" only for a host\'s reply', async () => {
  const { bouncer, queued } = harness();
  const msg = message([rcpt('a@remote.test'), rcpt('b@remote.test'), rcpt('c@remote.test')]);
  const recipients: NoticeRecipient[] = [
    { index: 0, reply: { code: 550, enhanced: '5.1.1', text: '<a@remote.test>: no such user' }, relay: mx },
    // No enhanced code from the host; the text merely looks like one (a regex over text would take it).
    { index: 1, reply: { code: 550, enhanced: null, text: '4.2.2 mailbox full, says the text' }, relay: mx },
    // The scheduler's expiry: our own reply, 4.4.7 (RFC 3463 §3.5).
    { index: 2, reply: { code: 451, enhanced: '4.4.7', text: 'expired after 5 days in the queue; last reply: 451 4.4.1 cannot connect' }, relay: null },
  ];
  await bouncer.notify({ kind: 'failed', msg, recipients });
  assert.equal(queued.length, 1);
  const groups = statusGroups(queued[0]!.message);
  assert.deepEqual(groups.map((g) => [g['Final-Recipient'], g['Action'], g['Status'], g['Remote-MTA'], g['Diagnostic-Code']]), [
    ['rfc822; a@remote.test', 'failed', '5.1.1', 'dns; mx.remote.test', 'smtp; 550 5.1.1 <a@remote.test>: no such user'],
    ['rfc822; b@remote.test', 'failed', '5.0.0', 'dns; mx.remote.test', 'smtp; 550 4.2.2 mailbox full, says the text'],
    ['rfc822; c@remote.test', 'failed', '4.4.7', undefined, 'X-Tern; 451 4.4.7 expired after 5 days in the queue; last reply: 451 4.4.1 cannot connect'],
  ]);
});

test('delay warning: the recipients it reports on get a `delayed` event with their last reply; NOTIFY=NEVER gets neither', async () => {
  const { bouncer, queued, seen } = harness();
  const msg = message([rcpt('a@remote.test'), rcpt('quiet@remote.test', [])]);
  const last = { code: 451, enhanced: '4.3.2', text: 'try again later' };
  await bouncer.notify({ kind: 'delayed', msg, recipients: [{ index: 0, reply: last, relay: mx }, { index: 1, reply: last, relay: mx }], willRetryUntil: Date.UTC(2025, 0, 7) });
  assert.equal(queued.length, 1);
  assert.deepEqual(statusGroups(queued[0]!.message).map((g) => [g['Final-Recipient'], g['Action'], g['Status']]), [['rfc822; a@remote.test', 'delayed', '4.3.2']]);
  assert.deepEqual(seen.map((e) => [e.type, e.recipient, e.data.attempt, e.data.reply, e.data.relay, e.data.source]), [['delayed', 'a@remote.test', 3, last, mx, 'submission']]);
  // Nothing sent (a kind nobody asked for): no event either.
  await bouncer.notify({ kind: 'delayed', msg, recipients: [{ index: 1, reply: last, relay: null }] });
  assert.equal(seen.length, 1);
});
