// REQUIRETLS (RFC 8689) end to end, on a loopback test network: Tern
// offers it only inside TLS and takes MAIL FROM … REQUIRETLS there; such a
// message is relayed only over TLS that an MTA-STS policy vouches for (a
// test CA, a real HTTPS policy host), to a server that offers REQUIRETLS
// itself, and otherwise returned with 5.7.30 (headers only). A message
// carrying `TLS-Required: No` (§4.2.2) goes through even where the
// recipient's enforced policy would refuse the server's certificate.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer, DEFAULT_EXTENSIONS } from '../helpers/scripted-peer.ts';
import { ALICE, mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { makeTestCa, type TestCa } from '../helpers/test-ca.ts';
import { policyBody, startPolicyServer, type PolicyServer } from '../helpers/policy-server.ts';
import { makeSelfSigned } from '../../src/server/tls.ts';
import { open, expectCmd, queuedAs } from './smtp-kit.ts';
import type { RawClient } from '../helpers/server.ts';
import type { MessageEvent } from '../../src/events/events.ts';

const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');

describe('REQUIRETLS (RFC 8689)', () => {
  let ca: TestCa;
  let dns: DnsServer;
  let policy: PolicyServer;
  /** Offers REQUIRETLS, certificate from the test CA for mx.secure.test. */
  let good: ScriptedPeer;
  /** Same certificate, no REQUIRETLS (an MTA that does not know it). */
  let unaware: ScriptedPeer;
  /** A self-signed certificate: no policy can vouch for it. */
  let selfSigned: ScriptedPeer;
  let srv: TestServer;
  const events: MessageEvent[] = [];

  before(async () => {
    ca = await makeTestCa();
    const mxCert = await ca.issue(['mx.secure.test', 'mx.unaware.test']);
    good = await ScriptedPeer.start({ host: '127.0.0.2', tls: { cert: mxCert.chain, key: mxCert.key }, extensions: [...DEFAULT_EXTENSIONS, 'REQUIRETLS'] });
    const port = good.port;
    unaware = await ScriptedPeer.start({ host: '127.0.0.3', port, tls: { cert: mxCert.chain, key: mxCert.key } });
    const bad = await makeSelfSigned('mx.selfsigned.test');
    selfSigned = await ScriptedPeer.start({ host: '127.0.0.4', port, tls: bad, extensions: [...DEFAULT_EXTENSIONS, 'REQUIRETLS'] });
    const policyCert = await ca.issue(['mta-sts.secure.test', 'mta-sts.unaware.test', 'mta-sts.selfsigned.test']);
    policy = await startPolicyServer(policyCert);
    for (const [domain, mx] of [['secure.test', 'mx.secure.test'], ['unaware.test', 'mx.unaware.test'], ['selfsigned.test', 'mx.selfsigned.test']]) {
      policy.policies.set(`mta-sts.${domain}`, policyBody({ mode: 'enforce', mx: [mx!], maxAge: 86400 }));
    }
    const sts = (domain: string, mx: string, ip: string) => ({
      [domain]: { MX: [{ preference: 10, exchange: mx }] },
      [mx]: { A: [ip] },
      [`_mta-sts.${domain}`]: { TXT: ['v=STSv1; id=20261207;'] },
      [`mta-sts.${domain}`]: { A: ['127.0.0.1'] },
    });
    dns = await startDnsServer({
      ...sts('secure.test', 'mx.secure.test', '127.0.0.2'),
      ...sts('unaware.test', 'mx.unaware.test', '127.0.0.3'),
      ...sts('selfsigned.test', 'mx.selfsigned.test', '127.0.0.4'),
      // No MTA-STS, no DNSSEC: nothing can vouch for its MX.
      'nopolicy.test': { MX: [{ preference: 10, exchange: 'mx.secure.test' }] },
    });
    srv = await startServer(
      {
        dns: { servers: [dns.address], timeout: '1s' },
        outbound: { port, mtaStsPort: policy.port, connectionReuse: '0s', timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
        queue: { retrySchedule: ['1s'], maxLifetime: '30s' },
      },
      { outboundTls: { ca: ca.cert } },
    );
    srv.tern.events.subscribe((e) => events.push(e));
  });

  after(async () => {
    await srv?.stop();
    for (const p of [good, unaware, selfSigned]) await p?.close();
    await policy?.close();
    await dns?.close();
    ca?.close();
  });

  /** Alice on the submission port, over STARTTLS, authenticated. */
  async function session(): Promise<{ c: RawClient; ehlo: string }> {
    const c = await open(srv.port('submission'));
    await expectCmd(c, 'STARTTLS', /^220 /);
    await c.starttls();
    const ehlo = await expectCmd(c, 'EHLO client.test', /^250 /m);
    await expectCmd(c, `AUTH PLAIN ${plain(ALICE.user, ALICE.password)}`, /^235 /);
    return { c, ehlo };
  }

  async function send(to: string, opts: { requireTls?: boolean; headers?: string } = {}): Promise<string> {
    const { c } = await session();
    try {
      await expectCmd(c, `MAIL FROM:<${ALICE.user}>${opts.requireTls === false ? '' : ' REQUIRETLS'}`, /^250 /);
      await expectCmd(c, `RCPT TO:<${to}>`, /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(`From: ${ALICE.user}\r\nTo: ${to}\r\nSubject: secret plans for ${to}\r\n${opts.headers ?? ''}\r\nThe body that must not leak.\r\n.\r\n`);
      return queuedAs(await c.reply());
    } finally {
      c.close();
    }
  }

  const outcome = (id: string) => events.find((e) => e.queueId === id && (e.type === 'delivered' || e.type === 'bounced'));

  it('is offered only after STARTTLS, and MAIL FROM … REQUIRETLS is taken there', async () => {
    const plainText = await open(srv.port('submission'));
    try {
      const ehlo = await expectCmd(plainText, 'EHLO client.test', /^250 /m);
      assert.doesNotMatch(ehlo, /REQUIRETLS/);
    } finally {
      plainText.close();
    }
    const { c, ehlo } = await session();
    try {
      assert.match(ehlo, /^250-REQUIRETLS$/m);
      await expectCmd(c, `MAIL FROM:<${ALICE.user}> REQUIRETLS`, /^250 2\.1\.0 /);
    } finally {
      c.close();
    }
  });

  it('relays over TLS the MTA-STS policy vouches for, to a server that offers REQUIRETLS, passing REQUIRETLS on', async () => {
    const before = good.sessions.length;
    const id = await send('bob@secure.test');
    const e = (await waitFor(() => outcome(id), 15_000, 'the delivery'))!;
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.policy, 'mta-sts');
    assert.equal(e.data.tls?.verified, true);
    const s = good.sessions.slice(before).find((x) => x.messages.length > 0)!;
    assert.equal(s.tls, true);
    assert.ok(s.commands.some((l) => /^MAIL FROM:<alice@tern\.test>.* REQUIRETLS/.test(l)), s.commands.join(' | '));
  });

  it('a next hop that does not offer REQUIRETLS: returned with 5.7.30, the notice carrying headers only', async () => {
    const id = await send('carol@unaware.test');
    const e = (await waitFor(() => outcome(id), 15_000, 'the bounce'))!;
    assert.equal(e.type, 'bounced');
    assert.equal(e.data.reply?.enhanced, '5.7.30');
    assert.equal(e.data.bounceClass, 'tls');
    assert.ok(!unaware.sessions.some((s) => s.messages.length > 0), 'nothing was sent to it');
    // RFC 8689 §5: the DSN does not quote the body.
    const dsn = await waitFor(() => mailbox(srv.dataDir, 'tern.test', 'alice').map((f) => fs.readFileSync(f, 'utf8')).find((t) => t.includes('carol@unaware.test') && /5\.7\.30/.test(t)), 15_000, 'the DSN') ?? '';
    assert.match(dsn, /secret plans for carol@unaware\.test/, 'the header section comes back');
    assert.doesNotMatch(dsn, /The body that must not leak/);
  });

  it('no policy to vouch for the MX (no MTA-STS, no DNSSEC): returned with 5.7.30 without connecting', async () => {
    const before = good.sessions.length;
    const id = await send('dave@nopolicy.test');
    const e = (await waitFor(() => outcome(id), 15_000, 'the bounce'))!;
    assert.equal(e.type, 'bounced');
    assert.equal(e.data.reply?.enhanced, '5.7.30');
    assert.equal(good.sessions.length, before, 'no connection was made');
  });

  it('a certificate the policy cannot vouch for: REQUIRETLS mail is returned with 5.7.30, never sent', async () => {
    const id = await send('erin@selfsigned.test');
    const e = (await waitFor(() => outcome(id), 15_000, 'the bounce'))!;
    assert.equal(e.type, 'bounced');
    assert.equal(e.data.reply?.enhanced, '5.7.30');
    assert.ok(!selfSigned.sessions.some((s) => s.messages.length > 0));
  });

  it('without REQUIRETLS the enforced policy holds back the same mail (deferred, 4.7.5)…', async () => {
    const id = await send('frank@selfsigned.test', { requireTls: false });
    const e = (await waitFor(() => events.find((x) => x.queueId === id && x.type === 'deferred'), 15_000, 'the deferral'))!;
    assert.equal(e.data.reply?.enhanced, '4.7.5');
    assert.match(e.data.reply?.text ?? '', /certificate/i);
    assert.ok(!selfSigned.sessions.some((s) => s.messages.length > 0));
    await srv.tern.scheduler.delete(id);
  });

  it('…and TLS-Required: No (§4.2.2) lets it through: the policy is reported, not enforced', async () => {
    const id = await send('grace@selfsigned.test', { requireTls: false, headers: 'TLS-Required: No\r\n' });
    const e = (await waitFor(() => outcome(id), 15_000, 'the delivery'))!;
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.verified, false);
    assert.equal(e.data.tls?.policy, 'mta-sts-testing');
    const got = selfSigned.sessions.flatMap((s) => s.messages).find((m) => m.data.toString('utf8').includes('grace@selfsigned.test'));
    assert.ok(got, 'delivered to the self-signed host');
  });
});
