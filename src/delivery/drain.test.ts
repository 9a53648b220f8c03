import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { DrainTransport, parseDrainTarget } from './drain.ts';
import { DeliveryRouter } from './router.ts';
import { DiscardTransport } from './discard.ts';
import { ScriptedPeer, DEFAULT_EXTENSIONS } from '../../test/helpers/scripted-peer.ts';
import { silentLogger } from '../util/log.ts';
import type { DeliveryJob } from './types.ts';
import type { Envelope, QueuedMessage } from '../spool/types.ts';

const TIMEOUTS = { connect: 2000, command: 2000, dataBlock: 2000, dataEnd: 2000 };

function job(to: string[]): DeliveryJob {
  const body = 'Subject: t\r\n\r\nbody\r\n';
  const envelope: Envelope = { id: 'QDRAIN1', sender: 's@x.test', receivedAt: Date.now(), smtputf8: false, recipients: to.map((a) => ({ address: a, original: a })) };
  const msg: QueuedMessage = { envelope, state: { attempts: 1, nextAttempt: 0, status: to.map(() => 'pending'), lastReply: to.map(() => null) }, bodyLength: body.length, size: body.length, recovered: false };
  return { msg, indices: to.map((_, i) => i), open: () => Readable.from([Buffer.from(body)]) };
}

describe('drain', () => {
  it('parses HOST:PORT and [v6]:PORT, and nothing else', () => {
    assert.deepEqual(parseDrainTarget('10.0.0.2:25'), { host: '10.0.0.2', port: 25 });
    assert.deepEqual(parseDrainTarget('mx2.example.org:2525'), { host: 'mx2.example.org', port: 2525 });
    assert.deepEqual(parseDrainTarget('[::1]:25'), { host: '::1', port: 25 });
    for (const bad of ['', 'host', 'host:', ':25', 'host:0', 'host:70000', '::1:25', 'a b:25']) assert.equal(parseDrainTarget(bad), null, bad);
  });

  it('what the target takes is delivered; what it refuses, even with a 5xx, stays queued (never a bounce)', async () => {
    const peer = await ScriptedPeer.start({ on: (c) => (c.verb === 'RCPT' && c.arg.includes('no@') ? '550 5.7.1 Relaying denied' : undefined) });
    const t = new DrainTransport({ target: { host: '127.0.0.1', port: peer.port }, heloName: 'a.test', timeouts: TIMEOUTS, log: silentLogger });
    try {
      const [ok, refused] = await t.deliver(job(['yes@remote.test', 'no@remote.test']));
      assert.equal(ok!.status, 'ok');
      assert.equal(ok!.successDsn, 'none', 'the target offers DSN and reports from now on');
      assert.equal(refused!.status, 'tempfail');
      assert.equal(refused!.reply.code, 451);
      assert.match(refused!.reply.text, /drain to 127\.0\.0\.1:\d+ refused: 550 5\.7\.1 Relaying denied/);
    } finally {
      await t.close();
      await peer.close();
    }
  });

  it('a target without DSN: a success is one we report as relayed', async () => {
    const peer = await ScriptedPeer.start({ extensions: DEFAULT_EXTENSIONS.filter((e) => e !== 'DSN') });
    const t = new DrainTransport({ target: { host: '127.0.0.1', port: peer.port }, heloName: 'a.test', timeouts: TIMEOUTS, log: silentLogger });
    try {
      const [r] = await t.deliver(job(['yes@remote.test']));
      assert.equal(r!.successDsn, 'relayed');
    } finally {
      await t.close();
      await peer.close();
    }
  });

  it('the router sends every recipient, local or remote, to the drain while it is on', () => {
    const discard = new DiscardTransport();
    const router = new DeliveryRouter({ maildir: discard, discard, perDestination: 5 });
    const env: Envelope = { id: 'Q', sender: '', receivedAt: 0, smtputf8: false, recipients: [{ address: 'a@tern.test', original: 'a@tern.test', mailbox: { domain: 'tern.test', localPart: 'a' } }, { address: 'b@remote.test', original: 'b@remote.test' }] };
    assert.equal(router.route(env, 0)?.key, 'local');
    assert.equal(router.route(env, 1), null, 'no remote transport: it would wait');
    const drain = new DrainTransport({ target: { host: '127.0.0.1', port: 1 }, heloName: 'a.test', timeouts: TIMEOUTS, log: silentLogger });
    router.drain({ transport: drain, close: () => drain.close(), limit: 3 });
    assert.equal(router.draining, true);
    assert.equal(router.route(env, 0)?.transport, drain);
    assert.equal(router.route(env, 1)?.limit, 3);
    router.drain(null);
    assert.equal(router.route(env, 0)?.key, 'local');
  });
});
