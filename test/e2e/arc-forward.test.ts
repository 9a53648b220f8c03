// ARC sealing of forwarded mail (RFC 8617): a message from outside that an
// alias of ours sends on to a remote address leaves with an ARC set signed
// by the alias's domain (its rsa DKIM key), and a verifier at the next hop
// finds the chain valid. (The message is stored once, so the local copy
// carries the same set.)

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dns from 'node:dns';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { open, expectCmd } from './smtp-kit.ts';
import { generateKey } from '../../src/intake/dkim.ts';
import { reverseName } from '../../src/policy/iprev.ts';

const { authenticate } = createRequire(import.meta.url)('mailauth') as {
  authenticate(input: Buffer, opts: Record<string, unknown>): Promise<{ arc: { status: { result: string } } | false; headers: string }>;
};

const HELO = 'mail.sender.test';

/** Unfolded header fields, in order. */
function fields(text: string): string[] {
  const header = text.slice(0, text.indexOf('\r\n\r\n') + 2);
  return header.replace(/\r\n[ \t]+/g, ' ').split('\r\n').filter((l) => l !== '');
}

describe('ARC sealing of forwarded mail', () => {
  let zone: DnsServer;
  let peer: ScriptedPeer;
  let srv: TestServer;

  before(async () => {
    peer = await ScriptedPeer.start({ host: '127.0.0.2' });
    zone = await startDnsServer({});
    srv = await startServer({
      dns: { servers: [zone.address], timeout: '1s' },
      inbound: { enabled: true },
      outbound: { port: peer.port, timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
    });
    // An ed25519 key too: the seal must use the rsa one.
    const rsa = await generateKey(srv.dataDir, 'tern.test', { algorithm: 'rsa', selector: 'arc-rsa' });
    const ed = await generateKey(srv.dataDir, 'tern.test', { algorithm: 'ed25519', selector: 'arc-ed' });
    zone.setZones({
      [HELO]: { A: ['127.0.0.1'], TXT: ['v=spf1 a -all'] },
      [reverseName('127.0.0.1')]: { PTR: [HELO] },
      'sender.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] },
      'mx.remote.test': { A: ['127.0.0.2'] },
      'mx.tern.test': { A: ['127.0.0.1'] },
      [rsa.dnsName]: { TXT: [rsa.dnsRecord] },
      [ed.dnsName]: { TXT: [ed.dnsRecord] },
    });
  });
  after(async () => {
    await srv?.stop();
    await peer?.close();
    await zone?.close();
  });

  it('seals the remote copy (i=1, cv=none, d=tern.test, rsa) and the next hop validates the chain', async () => {
    const id = `<arc.${Date.now()}@sender.test>`;
    const text = ['From: news@sender.test', 'To: fwd@tern.test', 'Subject: forwarded', `Message-ID: ${id}`, 'Date: Mon, 1 Jan 2024 00:00:00 +0000'].join('\r\n') + '\r\n\r\nHello, forwarded.\r\n';
    const c = await open(srv.port('smtp'), { ehlo: HELO });
    try {
      await expectCmd(c, 'MAIL FROM:<bounce@sender.test>', /^250 /);
      await expectCmd(c, 'RCPT TO:<fwd@tern.test>', /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(text + '.\r\n');
      assert.match(await c.reply(10_000), /^250 /);
    } finally {
      c.close();
    }

    // The local copy (alice) was delivered too.
    const local = await waitFor(() => mailbox(srv.dataDir, 'tern.test', 'alice').map((f) => fs.readFileSync(f, 'latin1')).find((t) => t.includes(id)), 10_000, 'local delivery');
    assert.ok(fields(local!).some((f) => /^Authentication-Results: mx\.tern\.test;/.test(f)));

    const msg = await waitFor(() => peer.sessions.flatMap((s) => s.messages).find((m) => m.data.toString('latin1').includes(id)), 10_000, 'relay to the peer');
    const data = msg!.data;
    const all = fields(data.toString('latin1'));
    // RFC 8617 §4.1: the set on top (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results), then our results.
    assert.match(all[0]!, /^ARC-Seal: i=1; a=rsa-sha256; .*cv=none; d=tern\.test; s=arc-rsa;/, all.join('\n'));
    assert.ok(/^ARC-Seal: .*\bcv=none\b/.test(all[0]!));
    assert.match(all[1]!, /^ARC-Message-Signature: i=1; a=rsa-sha256; .*d=tern\.test; .*s=arc-rsa;/);
    assert.match(all[2]!, /^ARC-Authentication-Results: i=1; mx\.tern\.test;.*spf=pass/);
    assert.match(all[3]!, /^Authentication-Results: mx\.tern\.test;/);
    assert.equal(all.filter((f) => /^ARC-/i.test(f)).length, 3);

    // The next hop: mailauth with the test DNS (which serves our key) finds the chain valid.
    const r = new dns.promises.Resolver();
    r.setServers([zone.address]);
    const res = await authenticate(data, {
      ip: '127.0.0.1',
      helo: 'mx.tern.test',
      sender: 'bounce@sender.test',
      mta: 'mx.remote.test',
      trustReceived: false,
      disableBimi: true,
      resolver: (name: string, type: string) => r.resolve(name, type),
    });
    assert.ok(res.arc, res.headers);
    assert.equal(res.arc.status.result, 'pass', res.headers);
  });
});
