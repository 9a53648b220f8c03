import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventStream } from '../events/events.ts';
import type { DeliveryReply, QueuedMessage, Recipient } from '../spool/types.ts';
import type { SuppressionRecord } from '../store/suppressions.ts';
import { isHardBounce, suppressHardBounces } from './auto.ts';
import type { SuppressionList } from './list.ts';

const r = (code: number, enhanced: string | null, text = 'x'): DeliveryReply => ({ code, enhanced, text });

test('hard bounces by enhanced code (RFC 3463 §3.2, §3.3): 5.1.x but the sender\'s 5.1.7/5.1.8, and 5.2.1', () => {
  const table: [DeliveryReply, boolean][] = [
    [r(550, '5.1.1'), true],
    [r(550, '5.1.0'), true],
    [r(550, '5.1.2'), true],
    [r(553, '5.1.3'), true],
    [r(551, '5.1.6'), true],
    [r(556, '5.1.10'), true],
    [r(550, '5.2.1'), true],
    [r(550, '5.1.7'), false],
    [r(550, '5.1.8'), false],
    [r(552, '5.2.2'), false],
    [r(550, '5.7.1'), false],
    [r(554, '5.7.1', 'blocked by Spamhaus'), false],
    [r(550, '5.0.0', 'User unknown'), false],
    [r(550, null, 'User unknown'), false],
    [r(450, '4.1.1'), false],
    [r(452, '4.2.1'), false],
    [r(550, '5.11.1'), false],
    [r(550, '5.2.10'), false],
  ];
  for (const [reply, hard] of table) assert.equal(isHardBounce(reply), hard, `${reply.code} ${reply.enhanced}`);
});

test('the subscriber suppresses remote recipients of hard bounces only, with the reply and relay as detail', () => {
  const events = new EventStream();
  const added: SuppressionRecord[] = [];
  const list = { suppress: (rec: SuppressionRecord) => void added.push(rec) } as unknown as SuppressionList;
  const stop = suppressHardBounces(events, list);
  const rcpts: Recipient[] = [
    { address: 'Gone@remote.test', original: 'Gone@remote.test' },
    { address: 'policy@remote.test', original: 'policy@remote.test' },
    { address: 'bob@tern.test', original: 'bob@tern.test', mailbox: { domain: 'tern.test', localPart: 'bob' } },
    { address: 'later@remote.test', original: 'later@remote.test' },
  ];
  const msg: QueuedMessage = {
    envelope: { id: 'Q1', sender: 'a@tern.test', recipients: rcpts, receivedAt: 0, smtputf8: false },
    state: { attempts: 0, nextAttempt: 0, status: rcpts.map(() => 'pending'), lastReply: rcpts.map(() => null) },
    bodyLength: 0,
    size: 0,
    recovered: false,
  };
  const relay = { host: 'mx.remote.test', ip: '192.0.2.1', port: 25 };
  const out = (reply: DeliveryReply) => ({ reply, relay, tls: null });
  events.emit('bounced', msg, 0, 1, out(r(550, '5.1.1', 'no such user')), 'mx');
  events.emit('bounced', msg, 1, 1, out(r(550, '5.7.1', 'relay denied')), 'mx');
  events.emit('bounced', msg, 2, 1, { reply: r(550, '5.1.1', 'no such mailbox'), relay: null, tls: null }, 'maildir');
  events.emit('deferred', msg, 3, 1, out(r(450, '4.2.1', 'mailbox busy')), 'mx');
  events.emit('expired', msg, 3, 2, out(r(451, '4.4.7', 'expired')), null);
  assert.equal(added.length, 1);
  assert.equal(added[0]!.address, 'Gone@remote.test');
  assert.equal(added[0]!.source, 'bounce');
  assert.equal(added[0]!.reason, 'hard-bounce');
  assert.equal(added[0]!.detail, '550 5.1.1 no such user (from mx.remote.test)');
  stop();
  events.emit('bounced', msg, 0, 2, out(r(550, '5.1.1', 'no such user')), 'mx');
  assert.equal(added.length, 1, 'unsubscribed');
});
