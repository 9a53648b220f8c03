// The transport interface: the router sends each recipient to the right
// destination, and every transport (Maildir, discard, remote MX against a
// scripted peer) answers one structured result per recipient.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { DeliveryRouter } from './router.ts';
import { DiscardTransport } from './discard.ts';
import { MaildirTransport } from './maildir.ts';
import { RemoteDelivery } from './remote.ts';
import type { DeliveryJob, DeliveryResult } from './types.ts';
import type { Envelope, QueuedMessage, Recipient } from '../spool/types.ts';
import type { Resolver } from '../dns/resolver.ts';
import { defaultConfig } from '../config/defaults.ts';
import { ScriptedPeer } from '../../test/helpers/scripted-peer.ts';
import { silentLogger } from '../util/log.ts';

const local = (user: string, domain = 'tern.test'): Recipient => ({ address: `${user}@${domain}`, original: `${user}@${domain}`, mailbox: { domain, localPart: user } });
const remote = (address: string): Recipient => ({ address, original: address });

function message(recipients: Recipient[]): QueuedMessage {
  const envelope: Envelope = { id: `Q${Math.random().toString(36).slice(2, 10)}`, sender: 'alice@tern.test', recipients, receivedAt: Date.now(), smtputf8: false };
  return { envelope, state: { attempts: 0, nextAttempt: 0, status: recipients.map(() => 'pending'), lastReply: recipients.map(() => null) }, bodyLength: 20, size: 20, recovered: false };
}

function job(msg: QueuedMessage, indices = msg.envelope.recipients.map((_, i) => i)): DeliveryJob {
  return { msg, indices, open: () => Readable.from([Buffer.from('Subject: t\r\n\r\nbody\r\n')]) };
}

const noRemote = { maildir: new DiscardTransport(), discard: new DiscardTransport(), perDestination: 3 };

test('router: local mail by its domain\'s delivery, remote by smarthost or per MX domain, nothing without a remote transport', () => {
  const fake = (name: string) => ({ name, deliver: async () => [] as DeliveryResult[] });
  const maildir = fake('maildir');
  const mx = fake('mx');
  const smarthost = fake('smarthost');
  const router = new DeliveryRouter({
    maildir,
    discard: new DiscardTransport(),
    localDelivery: (d) => (d === 'sink.test' ? 'discard' : 'maildir'),
    remote: { mx, smarthost, viaSmarthost: (d) => d === 'relayed.test', close: async () => {} },
    perDestination: 3,
  });
  const env = message([local('a'), local('b', 'sink.test'), remote('x@Example.ORG'), remote('y@example.org'), remote('z@other.test'), remote('w@relayed.test')]).envelope;
  const d = env.recipients.map((_, i) => router.route(env, i)!);
  assert.deepEqual(d.map((x) => [x.key, x.transport.name, x.limit]), [
    ['local', 'maildir', 20],
    ['discard', 'discard', 20],
    ['mx:example.org', 'mx', 3],
    ['mx:example.org', 'mx', 3],
    ['mx:other.test', 'mx', 3],
    ['smarthost', 'smarthost', 3],
  ]);
  assert.equal(d[2], d[3], 'one destination object per domain, reused');
  const bare = new DeliveryRouter(noRemote);
  assert.equal(bare.route(env, 2), null, 'no remote transport: the recipient stays queued');
  assert.equal(bare.route(env, 0)!.key, 'local');
});

test('maildir and discard: one structured result per recipient, no relay, final delivery for DSNs', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-router-'));
  try {
    const maildir = new MaildirTransport({ root, hostname: 'mx.tern.test', fsync: false });
    fs.writeFileSync(path.join(root, 'tern.test'), 'a file where the domain directory should be');
    const msg = message([local('alice', 'ok.test'), local('bob'), local('carol', 'ok.test')]);
    const results = await maildir.deliver(job(msg));
    assert.deepEqual(results.map((r) => [r.status, r.reply.code, r.reply.enhanced, r.relay, r.tls, r.successDsn]), [
      ['ok', 250, '2.0.0', null, null, 'delivered'],
      ['tempfail', 451, '4.3.0', null, null, 'none'],
      ['ok', 250, '2.0.0', null, null, 'delivered'],
    ]);
    assert.equal(results[0]!.reply.text, 'delivered to the mailbox');
    assert.match(results[1]!.reply.text, /^Maildir delivery failed: E[A-Z]+$/, 'the errno, never a path');
    assert.equal(fs.readdirSync(path.join(root, 'ok.test', 'alice', 'new')).length, 1);
    // Only the job's indices.
    const one = await maildir.deliver(job(msg, [2]));
    assert.equal(one.length, 1);

    const discarded = await new DiscardTransport().deliver(job(msg, [0, 2]));
    assert.deepEqual(discarded.map((r) => [r.status, r.reply, r.relay, r.successDsn]), [
      ['ok', { code: 250, enhanced: '2.0.0', text: 'discarded' }, null, 'delivered'],
      ['ok', { code: 250, enhanced: '2.0.0', text: 'discarded' }, null, 'delivered'],
    ]);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

function resolverFor(hosts: Record<string, string>): Resolver {
  return {
    mx: async (name) => (hosts[`mx.${name}`] ? [{ exchange: `mx.${name}`, priority: 10 }] : []),
    a: async (name) => (hosts[name] ? [hosts[name]] : []),
    aaaa: async () => [],
    txt: async () => [],
    resolve: async () => [],
  };
}

function remoteDelivery(port: number, hosts: Record<string, string>): RemoteDelivery {
  const base = defaultConfig().outbound;
  return new RemoteDelivery({
    config: { ...base, port, heloName: 'mx.tern.test', tls: 'none', connectionReuse: 0, timeouts: { connect: 2000, command: 5000, dataBlock: 5000, dataEnd: 5000 } },
    resolver: resolverFor(hosts),
    log: silentLogger,
  });
}

test('remote MX: each recipient gets the peer\'s reply with its enhanced code as parsed, the relay that gave it, and the DSN hand-off', async () => {
  const peer = await ScriptedPeer.start({
    on: (c) => (c.verb === 'RCPT' && c.arg.includes('nobody') ? '550 5.1.1 No such user here' : c.verb === 'RCPT' && c.arg.includes('full') ? '452 4.2.2 Mailbox full' : c.verb === 'RCPT' && c.arg.includes('plain') ? '550 Rejected without an enhanced code' : undefined),
  });
  const plainPeer = await ScriptedPeer.start({ extensions: ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES'] });
  try {
    const rd = remoteDelivery(peer.port, { 'mx.peer.test': '127.0.0.1' });
    const msg = message([remote('ok@peer.test'), remote('nobody@peer.test'), remote('full@peer.test'), remote('plain@peer.test')]);
    const results = await rd.mx.deliver(job(msg));
    const relay = { host: 'mx.peer.test', ip: '127.0.0.1', port: peer.port };
    assert.deepEqual(results.map((r) => [r.status, r.reply.code, r.reply.enhanced, r.relay]), [
      ['ok', 250, '2.0.0', relay],
      ['permfail', 550, '5.1.1', relay],
      ['tempfail', 452, '4.2.2', relay],
      ['permfail', 550, null, relay],
    ]);
    assert.equal(results[1]!.reply.text, 'No such user here');
    assert.equal(results[3]!.reply.text, 'Rejected without an enhanced code');
    // The peer offers DSN, so NOTIFY went on with the message: it reports success, not us (RFC 3461 §5.2.1).
    assert.equal(results[0]!.successDsn, 'none');
    assert.equal(results[0]!.tls, null, 'no STARTTLS offered');
    await rd.close();

    // A next hop without DSN: a success is ours to report as "relayed" (RFC 3461 §5.2.2).
    const rd2 = remoteDelivery(plainPeer.port, { 'mx.plain.test': '127.0.0.1' });
    const [relayed] = await rd2.mx.deliver(job(message([remote('x@plain.test')])));
    assert.deepEqual([relayed!.status, relayed!.successDsn], ['ok', 'relayed']);
    await rd2.close();
  } finally {
    await peer.close();
    await plainPeer.close();
  }
});

test('remote MX: no host answering, no MX host address, a DNS failure: our own replies, without a relay', async () => {
  // A port nobody listens on: bind one, close it.
  const probe = await ScriptedPeer.start();
  const deadPort = probe.port;
  await probe.close();
  const rd = remoteDelivery(deadPort, { 'mx.down.test': '127.0.0.1' });
  try {
    const [down] = await rd.mx.deliver(job(message([remote('a@down.test')])));
    assert.equal(down!.status, 'tempfail');
    assert.deepEqual([down!.reply.code, down!.reply.enhanced, down!.relay], [451, '4.4.1', null]);
    assert.match(down!.reply.text, /127\.0\.0\.1/, 'the text names the host tried');
    // The name has no MX and no address: RFC 5321 §5.1 leaves nothing to try.
    const [nowhere] = await rd.mx.deliver(job(message([remote('a@nowhere.test')])));
    assert.notEqual(nowhere!.status, 'ok');
    assert.equal(nowhere!.relay, null);
    assert.ok(nowhere!.reply.enhanced, JSON.stringify(nowhere!.reply));
    const broken: Resolver = { ...resolverFor({}), mx: async () => Promise.reject(new Error('SERVFAIL')) };
    const rd2 = new RemoteDelivery({ config: { ...defaultConfig().outbound, heloName: 'mx.tern.test' }, resolver: broken, log: silentLogger });
    const [dns] = await rd2.mx.deliver(job(message([remote('a@broken.test')])));
    assert.deepEqual([dns!.status, dns!.reply.code, dns!.reply.enhanced, dns!.relay], ['tempfail', 451, '4.4.3', null]);
  } finally {
    await rd.close();
  }
});
