// Backscatter (issue 11, break 7), end to end: a real Tern with the test DNS
// server and a scripted peer MTA that is the MX of every remote test domain.
// Mail from outside (port 25, not authenticated, not a trusted network)
// with a forged MAIL FROM must not make us mail the forged address: no
// success DSN for NOTIFY=SUCCESS, no failure DSN when an alias's next hop
// answers 550, and none at all when the inbound checks are off. A verified
// sender (SPF pass, or a DKIM pass aligned with its domain) still gets its
// DSNs, with the header section only unless it asked for RET=FULL, and no
// DSN names a file of ours. Mail from a trusted network is unchanged.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { ScriptedPeer, type PeerCommand } from '../helpers/scripted-peer.ts';
import { ROOT, mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { open, expectCmd, queuedAs } from './smtp-kit.ts';
import { DkimSigner, dnsRecordFor, type DkimKey } from '../../src/intake/dkim.ts';
import { createLogger } from '../../src/util/log.ts';

const PEER = '127.0.0.2';
const TRUSTED = '127.0.0.3';
const HELO = 'mail.client.test';
const DKIM_KEY: DkimKey = {
  domain: 'dk.test',
  selector: 'sel',
  privateKey: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  algorithm: 'rsa-sha256',
};

const mx = { MX: [{ preference: 10, exchange: 'mx.peer.test' }] };
const ZONE: Zone = {
  [HELO]: { A: ['127.0.0.1'] },
  'mx.peer.test': { A: [PEER] },
  // The victim: its SPF allows nobody, so a message from us claiming it is forged.
  'forged.test': { ...mx, TXT: ['v=spf1 -all'] },
  // A sender whose SPF allows the test client.
  'verified.test': { ...mx, TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
  // SPF fails, but the message carries a DKIM signature of the parent domain (relaxed alignment).
  'dk.test': { ...mx, TXT: ['v=spf1 -all'] },
  'news.dk.test': { ...mx, TXT: ['v=spf1 -all'] },
  'sel._domainkey.dk.test': { TXT: [dnsRecordFor(DKIM_KEY)] },
  // Next hops of our aliases: the peer refuses (550) or defers (451) these.
  'reject.test': mx,
  'slow.test': mx,
};

const DOMAINS = [
  {
    name: 'tern.test',
    mailboxes: ['alice', 'bob'],
    aliases: { fwd: ['gone@reject.test'], split: ['gone@reject.test', 'later@slow.test'] },
  },
];

let n = 0;
function message(from: string, marker: string): string {
  return [`From: <${from}>`, 'To: <alice@tern.test>', `Subject: backscatter ${++n}`, `Message-ID: <bs${n}.${Date.now()}@client.test>`, 'Date: Mon, 1 Jan 2024 00:00:00 +0000', '', `${marker}: the body a spammer wants reflected.`, ''].join('\r\n');
}

async function signed(text: string): Promise<string> {
  const signer = new DkimSigner([DKIM_KEY]);
  signer.write(Buffer.from(text));
  const fields = await signer.finish();
  assert.deepEqual(signer.errors, []);
  return fields + text;
}

/** One transaction on port 25; returns the queue id. */
async function send(port: number, opts: { from: string; rcpt: string[]; data: string; mailParams?: string; localAddress?: string }): Promise<string> {
  const c = await open(port, { ehlo: HELO, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
  try {
    await expectCmd(c, `MAIL FROM:<${opts.from}>${opts.mailParams ? ' ' + opts.mailParams : ''}`, /^250 /);
    for (const r of opts.rcpt) await expectCmd(c, `RCPT TO:${r}`, /^250 /);
    await expectCmd(c, 'DATA', /^354 /);
    c.send(opts.data + '.\r\n');
    return queuedAs(await c.reply(15_000));
  } finally {
    c.close();
  }
}

/** Every DSN (multipart/report) the peer received, as text. */
function dsnsAtPeer(peer: ScriptedPeer): string[] {
  return peer.sessions.flatMap((s) => s.messages.map((m) => m.data.toString('latin1'))).filter((t) => /^Content-Type: multipart\/report/m.test(t));
}

const dsnsTo = (peer: ScriptedPeer, address: string) => dsnsAtPeer(peer).filter((t) => t.includes(`\r\nTo: <${address}>\r\n`));

/** The original has left the queue (any DSN about it was queued before that) and every delivery, DSNs included, is done. */
async function settled(srv: TestServer, id: string): Promise<void> {
  await waitFor(() => !srv.tern.scheduler.get(id), 15_000, `${id} to leave the queue`);
  await srv.tern.scheduler.idle();
}

describe('backscatter: DSNs only to verified senders of mail from outside', () => {
  let dns: DnsServer;
  let peer: ScriptedPeer;
  let srv: TestServer;
  let port: number;
  const log: string[] = [];
  const logged = (msg: string, id: string) =>
    log.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.msg === msg && (r.id === id || r.about === id));

  before(async () => {
    peer = await ScriptedPeer.start({
      host: PEER,
      on: (c: PeerCommand) => {
        if (c.verb !== 'RCPT') return undefined;
        if (c.arg.includes('@reject.test>')) return '550 5.1.1 <gone@reject.test>: Recipient address rejected: User unknown';
        if (c.arg.includes('@slow.test>')) return '451 4.3.2 try again later';
        return undefined;
      },
    });
    dns = await startDnsServer(ZONE);
    srv = await startServer(
      {
        domains: DOMAINS,
        trustedNetworks: [TRUSTED],
        dns: { servers: [dns.address], timeout: '1s' },
        inbound: { enabled: true },
        outbound: { port: peer.port, timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
        queue: { retrySchedule: ['1h'] },
        // The same address bounces 5.1.1 again and again here: the backscatter rule is under test, not the suppression list.
        suppression: { hardBounces: false },
      },
      { log: createLogger('info', (line) => log.push(line)) },
    );
    port = srv.port('smtp');
  });

  after(async () => {
    await srv?.stop();
    await peer?.close();
    await dns?.close();
  });

  it('forged sender with NOTIFY=SUCCESS: delivered, and no success DSN to the forged address', async () => {
    const id = await send(port, { from: 'victim@forged.test', rcpt: ['<alice@tern.test> NOTIFY=SUCCESS'], data: message('victim@forged.test', 'M1') });
    await settled(srv, id);
    assert.ok(mailbox(srv.dataDir, 'tern.test', 'alice').some((f) => fs.readFileSync(f, 'latin1').includes('M1: the body')), 'the message itself was delivered');
    assert.deepEqual(dsnsTo(peer, 'victim@forged.test'), []);
    assert.deepEqual(srv.tern.scheduler.list().filter((m) => m.from === ''), [], 'no DSN queued');
    assert.equal(logged('inbound', id)[0]?.senderVerified, 'no');
    const [line] = logged('dsn suppressed', id);
    assert.ok(line, 'the suppressed DSN is logged');
    assert.equal(line.kind, 'delivered');
    assert.equal(line.reason, 'sender not verified (spf=fail, no aligned dkim pass)');
  });

  it('forged sender to an alias whose next hop answers 550: no failure DSN, while a trusted client still gets its own', async () => {
    const id = await send(port, { from: 'victim@forged.test', rcpt: ['<fwd@tern.test>'], data: message('victim@forged.test', 'M2') });
    await settled(srv, id);
    assert.ok(peer.sessions.some((s) => s.commands.some((c) => c.startsWith('RCPT TO:<gone@reject.test>'))), 'the forward was tried and refused');
    assert.deepEqual(dsnsTo(peer, 'victim@forged.test'), []);
    assert.equal(logged('dsn suppressed', id)[0]?.kind, 'failed');

    // Still queued (one recipient deferred): `tern queue show` has the record.
    const kept = await send(port, { from: 'victim@forged.test', rcpt: ['<split@tern.test>'], data: message('victim@forged.test', 'M3') });
    const shown = (await waitFor(() => {
      const s = srv.tern.scheduler.show(kept);
      return s && s.attempts > 0 && s.state !== 'active' ? s : undefined;
    }, 15_000, 'the first attempt'))!;
    assert.deepEqual(shown.envelope.outside, { verified: null, detail: 'spf=fail, no aligned dkim pass' });
    assert.deepEqual(shown.dsnSuppressed.map((d) => [d.kind, d.recipients, d.reason]), [['failed', ['gone@reject.test'], 'sender not verified (spf=fail, no aligned dkim pass)']]);
    assert.deepEqual(shown.recipients.map((r) => r.status), ['bounced', 'deferred']);
    // The same through the CLI (asynchronously: this process is the server).
    const cli = await promisify(execFile)(process.execPath, [path.join(ROOT, 'bin/tern.js'), 'queue', 'show', kept, '--config', path.join(srv.dir, 'tern.yaml')], { encoding: 'utf8' });
    assert.match(cli.stdout, /^sender check: not verified \(spf=fail, no aligned dkim pass\)$/m);
    assert.match(cli.stdout, /^dsn suppressed: failed for gone@reject\.test at \S+: sender not verified \(spf=fail, no aligned dkim pass\)$/m);
    await srv.tern.scheduler.delete(kept);
    await srv.tern.scheduler.idle();
    assert.deepEqual(dsnsTo(peer, 'victim@forged.test'), []);

    // The same forged-looking sender from a trusted network is our own mail: its DSN goes out as before.
    const own = await send(port, { from: 'victim@forged.test', rcpt: ['<fwd@tern.test>'], data: message('victim@forged.test', 'M4'), localAddress: TRUSTED });
    await settled(srv, own);
    const dsns = dsnsTo(peer, 'victim@forged.test');
    assert.equal(dsns.length, 1);
    assert.match(dsns[0]!, /Content-Type: message\/rfc822/);
    assert.match(dsns[0]!, /M4: the body/);
  });

  it('SPF-pass sender: failure DSN with the header section only, the whole message with RET=FULL; no file path in a success DSN', async () => {
    const sender = 'bounce@verified.test';
    const plain = await send(port, { from: sender, rcpt: ['<fwd@tern.test>'], data: message(sender, 'M5') });
    await settled(srv, plain);
    let dsns = dsnsTo(peer, sender);
    assert.equal(dsns.length, 1);
    assert.match(dsns[0]!, /Subject: Undelivered Mail Returned to Sender/);
    assert.match(dsns[0]!, /Content-Type: text\/rfc822-headers/);
    assert.match(dsns[0]!, /Subject: backscatter \d+/);
    assert.doesNotMatch(dsns[0]!, /M5: the body/);

    const full = await send(port, { from: sender, rcpt: ['<fwd@tern.test>'], data: message(sender, 'M6'), mailParams: 'RET=FULL' });
    await settled(srv, full);
    dsns = dsnsTo(peer, sender);
    assert.equal(dsns.length, 2);
    assert.match(dsns[1]!, /Content-Type: message\/rfc822/);
    assert.match(dsns[1]!, /M6: the body/);

    const before = new Set(mailbox(srv.dataDir, 'tern.test', 'bob'));
    const ok = await send(port, { from: sender, rcpt: ['<bob@tern.test> NOTIFY=SUCCESS'], data: message(sender, 'M7') });
    await settled(srv, ok);
    const file = mailbox(srv.dataDir, 'tern.test', 'bob').find((f) => !before.has(f));
    assert.ok(file, 'delivered to bob');
    dsns = dsnsTo(peer, sender);
    assert.equal(dsns.length, 3);
    const success = dsns[2]!;
    assert.match(success, /Subject: Successful Mail Delivery Report/);
    assert.match(success, /Action: delivered/);
    const name = file.slice(file.lastIndexOf('/') + 1);
    for (const secret of [name, `T${ok}R0`, srv.dataDir, 'new/', 'mailboxes']) assert.ok(!success.includes(secret), `the DSN names ${secret}`);
  });

  it('DKIM pass aligned with the sender (SPF fails): verified, failure DSN with the header section only', async () => {
    const sender = 'bounce@news.dk.test';
    const id = await send(port, { from: sender, rcpt: ['<fwd@tern.test>'], data: await signed(message('news@dk.test', 'M8')) });
    await settled(srv, id);
    assert.equal(logged('inbound', id)[0]?.senderVerified, 'dkim');
    const dsns = dsnsTo(peer, sender);
    assert.equal(dsns.length, 1);
    assert.match(dsns[0]!, /Content-Type: text\/rfc822-headers/);
    assert.doesNotMatch(dsns[0]!, /M8: the body/);
  });
});

describe('backscatter with the inbound checks turned off: no outside sender is verified', () => {
  let dns: DnsServer;
  let peer: ScriptedPeer;
  let srv: TestServer;
  const log: string[] = [];

  before(async () => {
    peer = await ScriptedPeer.start({ host: PEER });
    dns = await startDnsServer(ZONE);
    srv = await startServer(
      {
        domains: DOMAINS,
        dns: { servers: [dns.address], timeout: '1s' },
        inbound: { enabled: false },
        outbound: { port: peer.port, timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
      },
      { log: createLogger('info', (line) => log.push(line)) },
    );
  });

  after(async () => {
    await srv?.stop();
    await peer?.close();
    await dns?.close();
  });

  it('a sender whose SPF would pass gets no success DSN', async () => {
    const sender = 'bounce@verified.test';
    const id = await send(srv.port('smtp'), { from: sender, rcpt: ['<alice@tern.test> NOTIFY=SUCCESS'], data: message(sender, 'M9') });
    await settled(srv, id);
    assert.deepEqual(dsnsAtPeer(peer), []);
    const line = log.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.msg === 'dsn suppressed' && r.id === id);
    assert.equal(line?.reason, 'sender not verified (inbound checks disabled)');
  });
});
