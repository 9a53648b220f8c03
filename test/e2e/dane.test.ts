// Outbound DANE (RFC 7672) end to end, on a real DNSSEC test network
// (test/helpers/dnssec.ts): nsd serves zones signed at test time, a private
// unbound validates them and is Tern's only resolver (`dns.servers`, with
// `dns.dnssec: true`), and scripted receiving MTAs on other loopback
// addresses present certificates from a test CA that Tern does NOT trust:
// only the TLSA records can vouch for them. A secure TLSA answer that matches
// delivers; one that does not, a bogus one, or a server without STARTTLS
// defers the mail, never sending it in the clear (§2.2). An insecure zone's
// TLSA records mean nothing, so that mail goes out with opportunistic TLS.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { makeTestCa, type TestCa } from '../helpers/test-ca.ts';
import { requireDnssecTools, startSignedDns, type SignedDns } from '../helpers/dnssec.ts';
import { open, sendMail } from './smtp-kit.ts';
import type { MessageEvent } from '../../src/events/events.ts';

const skip = requireDnssecTools();

/** TLSA association data in zone-file form (RFC 6698 §2.2), computed from the certificate. */
function tlsa(usage: number, selector: number, pem: string): string {
  const cert = new X509Certificate(pem);
  const octets = selector === 0 ? cert.raw : cert.publicKey.export({ type: 'spki', format: 'der' });
  return `${usage} ${selector} 1 ${createHash('sha256').update(octets).digest('hex')}`;
}

describe('outbound DANE (RFC 7672)', { skip }, () => {
  let ca: TestCa;
  let dns: SignedDns;
  /** STARTTLS with a certificate of the test CA naming every MX host below. */
  let tlsPeer: ScriptedPeer;
  /** No STARTTLS at all. */
  let plainPeer: ScriptedPeer;
  let srv: TestServer;
  const events: MessageEvent[] = [];

  before(async () => {
    ca = await makeTestCa('DANE e2e CA');
    const names = ['ee', 'ta', 'wrong', 'insecure', 'bogus', 'plain'].map((d) => `mx.${d}.test`);
    const cert = await ca.issue(names);
    tlsPeer = await ScriptedPeer.start({ host: '127.0.0.2', tls: { cert: cert.chain, key: cert.key } });
    const port = tlsPeer.port;
    plainPeer = await ScriptedPeer.start({ host: '127.0.0.3', port });

    const ee = tlsa(3, 1, cert.cert);
    const zone = (ip: string, record: string) => ['@ IN MX 10 mx', `mx IN A ${ip}`, `_25._tcp.mx IN TLSA ${record}`];
    dns = await startSignedDns({
      'ee.test': { kind: 'signed', records: zone('127.0.0.2', ee) },
      'ta.test': { kind: 'signed', records: zone('127.0.0.2', tlsa(2, 0, ca.cert)) },
      // A well-formed record for some other key.
      'wrong.test': { kind: 'signed', records: zone('127.0.0.2', `3 1 1 ${'ab'.repeat(32)}`) },
      // Unsigned: the same wrong record, but without DNSSEC it is not to be trusted, so it is ignored.
      'insecure.test': { kind: 'unsigned', records: zone('127.0.0.2', `3 1 1 ${'ab'.repeat(32)}`) },
      // MX and address secure, the TLSA signatures broken: the resolver answers SERVFAIL for the TLSA.
      'bogus.test': { kind: 'bogus', bogus: ['TLSA'], records: zone('127.0.0.2', ee) },
      'plain.test': { kind: 'signed', records: zone('127.0.0.3', ee) },
      // The certificate does not name mx.noname.test / mx.tanoname.test: fine for DANE-EE, not for DANE-TA.
      'noname.test': { kind: 'signed', records: zone('127.0.0.2', ee) },
      'tanoname.test': { kind: 'signed', records: zone('127.0.0.2', tlsa(2, 1, ca.cert)) },
    });

    srv = await startServer({
      trustedNetworks: ['127.0.0.0/8'],
      dns: { servers: [dns.resolver], timeout: '2s', dnssec: true },
      outbound: { port, connectionReuse: '0s', timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
      queue: { retrySchedule: ['1s'], maxLifetime: '60s' },
    });
    srv.tern.events.subscribe((e) => events.push(e));
  });

  after(async () => {
    await srv?.stop();
    await tlsPeer?.close();
    await plainPeer?.close();
    await dns?.close();
    ca?.close();
  });

  async function send(to: string): Promise<string> {
    const c = await open(srv.port('smtp'));
    try {
      return await sendMail(c, 'alice@tern.test', [to], `From: alice@tern.test\r\nTo: ${to}\r\nSubject: DANE test for ${to}\r\n\r\nHello.\r\n`);
    } finally {
      c.close();
    }
  }

  /** The outcome of the message's first attempt. */
  const attempt = async (id: string): Promise<MessageEvent> =>
    (await waitFor(() => events.find((e) => e.queueId === id && ['delivered', 'deferred', 'bounced'].includes(e.type)), 15_000, `the first attempt of ${id}`))!;
  const receivedBy = (peer: ScriptedPeer, rcpt: string) => peer.sessions.some((s) => s.messages.length > 0 && s.commands.some((c) => c.includes(`<${rcpt}>`)));

  /** The first attempt's deferral; then the message is deleted so it does not keep retrying. */
  async function deferral(id: string, t: { diagnostic(s: string): void }): Promise<MessageEvent> {
    const e = await attempt(id);
    await srv.tern.scheduler.delete(id);
    assert.equal(e.type, 'deferred', JSON.stringify(e.data));
    t.diagnostic(`${e.data.reply?.code} ${e.data.reply?.enhanced} ${e.data.reply?.text}`);
    return e;
  }

  it('the DNSSEC test network starts in a few seconds', (t) => {
    t.diagnostic(`nsd + unbound with the zones above (keys made, zones signed): ${dns.startupMs} ms`);
    assert.ok(dns.startupMs < 5000);
  });

  it('DANE-EE (3 1 1) matching the server key: delivered, the session counted as verified', async () => {
    const id = await send('bob@ee.test');
    const e = await attempt(id);
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.verified, true);
    assert.equal(e.data.tls?.policy, 'dane');
    assert.equal(e.data.relay?.host, 'mx.ee.test');
    assert.ok(receivedBy(tlsPeer, 'bob@ee.test'));
  });

  it('DANE-TA (2 0 1) naming the CA: delivered over the chain the server presents', async () => {
    const e = await attempt(await send('carol@ta.test'));
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.verified, true);
    assert.equal(e.data.tls?.policy, 'dane');
    assert.ok(receivedBy(tlsPeer, 'carol@ta.test'));
  });

  it('DANE-EE does not check the name (RFC 7672 §3.1.1): a certificate for other hosts still delivers', async () => {
    const e = await attempt(await send('ivan@noname.test'));
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.policy, 'dane');
  });

  it('DANE-TA does (RFC 7672 §3.2): a certificate that does not name the MX host is deferred', async (t) => {
    const e = await deferral(await send('judy@tanoname.test'), t);
    assert.match(e.data.reply?.text ?? '', /DANE: .*names none of mx\.tanoname\.test/);
    assert.ok(!receivedBy(tlsPeer, 'judy@tanoname.test'));
  });

  it('a secure TLSA record for another key: deferred, the reason naming DANE, nothing sent', async (t) => {
    const e = await deferral(await send('dave@wrong.test'), t);
    assert.match(e.data.reply?.text ?? '', /DANE|TLSA/);
    assert.match(e.data.reply?.enhanced ?? '', /^4\./);
    assert.ok(!receivedBy(tlsPeer, 'dave@wrong.test'), 'the message was not sent');
  });

  it('an unsigned zone: its TLSA records are ignored, delivered with opportunistic TLS', async () => {
    const e = await attempt(await send('erin@insecure.test'));
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.verified, false, 'the test CA is not trusted, and no DANE applies');
    assert.notEqual(e.data.tls?.policy, 'dane');
    assert.ok(receivedBy(tlsPeer, 'erin@insecure.test'));
  });

  it('a bogus TLSA answer (SERVFAIL from the validator): deferred without connecting', async (t) => {
    const sessions = tlsPeer.sessions.length;
    const e = await deferral(await send('frank@bogus.test'), t);
    assert.match(e.data.reply?.text ?? '', /TLSA|DNSSEC/);
    assert.equal(tlsPeer.sessions.length, sessions, 'no connection to the MX');
  });

  it('a secure TLSA record and a server without STARTTLS: deferred, never sent in the clear', async (t) => {
    const e = await deferral(await send('grace@plain.test'), t);
    assert.match(e.data.reply?.text ?? '', /STARTTLS/);
    assert.ok(!receivedBy(plainPeer, 'grace@plain.test'), 'nothing went over plaintext');
    assert.ok(plainPeer.sessions.every((s) => !s.commands.some((c) => c.startsWith('MAIL'))), 'not even MAIL FROM');
  });

});
