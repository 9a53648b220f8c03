// State files written before replies were structured hold `lastError`
// strings; they are read compatibly: each string parsed once at load into
// {code, enhanced, text}, and the next write stores only the structure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Spool } from './spool.ts';
import { upgradeState, type DeliveryState, type Envelope } from './types.ts';

const old = (lastError: (string | null)[], status: DeliveryState['status']) =>
  ({ attempts: 2, nextAttempt: 1, status, lastError }) as unknown as DeliveryState & { lastError: (string | null)[] };

test('upgradeState: old reply strings become structured replies; new states pass through untouched', () => {
  const up = upgradeState(
    old(
      [
        '451 4.4.1 cannot connect to 192.0.2.1:25: connect ECONNREFUSED',
        '550 5.1.1 <x@y.test>: no such user',
        '451 try later',
        '550 4.1.1 class does not match',
        null,
        'expired after 5 days in the queue; last error: 451 4.4.1 x',
        '250 2.0.0 delivered to the mailbox',
      ],
      ['pending', 'failed', 'pending', 'failed', 'pending', 'failed', 'delivered'],
    ),
  );
  assert.deepEqual(up.lastReply, [
    { code: 451, enhanced: '4.4.1', text: 'cannot connect to 192.0.2.1:25: connect ECONNREFUSED' },
    { code: 550, enhanced: '5.1.1', text: '<x@y.test>: no such user' },
    { code: 451, enhanced: null, text: 'try later' },
    // RFC 2034 §4: an enhanced code of another class than the reply's is text.
    { code: 550, enhanced: null, text: '4.1.1 class does not match' },
    null,
    // No code at all (our own old expiry text): the recipient's outcome gives the class.
    { code: 550, enhanced: null, text: 'expired after 5 days in the queue; last error: 451 4.4.1 x' },
    { code: 250, enhanced: '2.0.0', text: 'delivered to the mailbox' },
  ]);
  assert.equal('lastError' in up, false, 'the old field is gone');
  const current: DeliveryState = { attempts: 1, nextAttempt: 5, status: ['pending'], lastReply: [{ code: 451, enhanced: '4.3.0', text: 'x' }] };
  assert.equal(upgradeState(current), current);
  // Neither field (a hand-made file): empty replies, one per recipient.
  assert.deepEqual(upgradeState({ attempts: 0, nextAttempt: 0, status: ['pending', 'pending'] } as unknown as DeliveryState).lastReply, [null, null]);
});

test('a queue written by the previous version: recovery reads the old state file, a write stores only the structured form', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-state-compat-'));
  try {
    const spool = new Spool({ dir, fsync: false });
    spool.init();
    const env: Envelope = {
      id: spool.newId(), sender: 's@x.test', receivedAt: Date.now(), smtputf8: false,
      recipients: [{ address: 'a@remote.test', original: 'a@remote.test' }, { address: 'b@remote.test', original: 'b@remote.test' }],
    };
    const w = spool.create(env);
    // Over the journal's size limit: a queue file of its own, as deferred mail has.
    w.write(Buffer.alloc(300 * 1024, 'x'));
    await w.commit();
    fs.writeFileSync(path.join(spool.stateDir, `${env.id}.json`), JSON.stringify({ attempts: 3, nextAttempt: 42, status: ['pending', 'delivered'], lastError: ['421 4.7.0 too many connections, slow down', null] }));

    const { messages } = await new Spool({ dir, fsync: false }).recover();
    const [msg] = messages;
    assert.equal(msg!.envelope.id, env.id);
    assert.equal(msg!.state.attempts, 3);
    assert.deepEqual(msg!.state.lastReply, [{ code: 421, enhanced: '4.7.0', text: 'too many connections, slow down' }, null]);

    await spool.writeState(env.id, msg!.state);
    const raw = JSON.parse(fs.readFileSync(path.join(spool.stateDir, `${env.id}.json`), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(raw.lastReply, [{ code: 421, enhanced: '4.7.0', text: 'too many connections, slow down' }, null]);
    assert.equal('lastError' in raw, false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
