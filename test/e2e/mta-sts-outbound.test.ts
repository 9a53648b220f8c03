// Outbound MTA-STS (RFC 8461) end to end, on a loopback test network: a DNS
// server with the recipient domains' MX, `_mta-sts` TXT and policy-host
// records, a real HTTPS policy host whose certificate comes from a test CA,
// and scripted receiving MTAs on other loopback addresses. In enforce mode
// Tern delivers only to an MX the policy names, over STARTTLS with a
// certificate valid for the MX name (§4, §5); anything less defers the mail
// (§5.1: never sent in the clear or to an unvalidated host). In testing mode
// it delivers anyway (§5.2).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { makeTestCa, type TestCa } from '../helpers/test-ca.ts';
import { policyBody, selfSignedCert, startPolicyServer, type PolicyServer } from '../helpers/policy-server.ts';
import { open, sendMail } from './smtp-kit.ts';
import { openStore } from '../../src/store/store.ts';
import type { MessageEvent } from '../../src/events/events.ts';

describe('outbound MTA-STS (RFC 8461)', () => {
  let ca: TestCa;
  let dns: DnsServer;
  let policy: PolicyServer;
  /** STARTTLS with a certificate from the test CA for every MX name below. */
  let good: ScriptedPeer;
  /** No STARTTLS at all. */
  let plain: ScriptedPeer;
  /** STARTTLS with a certificate no CA signed. */
  let selfSigned: ScriptedPeer;
  let srv: TestServer;
  const events: MessageEvent[] = [];

  before(async () => {
    ca = await makeTestCa();
    const mxCert = await ca.issue(['mx.good.test', 'mx.elsewhere.test', 'mx.cached.test']);
    good = await ScriptedPeer.start({ host: '127.0.0.2', tls: { cert: mxCert.chain, key: mxCert.key } });
    const port = good.port;
    plain = await ScriptedPeer.start({ host: '127.0.0.3', port });
    selfSigned = await ScriptedPeer.start({ host: '127.0.0.4', port, tls: await selfSignedCert(['mx.selfsigned.test', 'mx.testing.test']) });

    const domains: [domain: string, mx: string, ip: string, mode: string, policyMx: string][] = [
      ['good.test', 'mx.good.test', '127.0.0.2', 'enforce', 'mx.good.test'],
      ['plain.test', 'mx.plain.test', '127.0.0.3', 'enforce', 'mx.plain.test'],
      ['selfsigned.test', 'mx.selfsigned.test', '127.0.0.4', 'enforce', 'mx.selfsigned.test'],
      // The MX works and its certificate is valid for its name, but the policy names another host.
      ['outside.test', 'mx.elsewhere.test', '127.0.0.2', 'enforce', 'mx.outside.test'],
      ['testing.test', 'mx.testing.test', '127.0.0.4', 'testing', 'mx.testing.test'],
      ['cached.test', 'mx.cached.test', '127.0.0.2', 'enforce', '*.cached.test'],
      // A record but no policy to be had (the policy host answers 404), and none cached.
      ['broken.test', 'mx.broken.test', '127.0.0.3', 'enforce', 'mx.broken.test'],
    ];
    const zone: Zone = {};
    for (const [domain, mx, ip] of domains) {
      zone[domain] = { MX: [{ preference: 10, exchange: mx }] };
      zone[mx] = { A: [ip] };
      zone[`_mta-sts.${domain}`] = { TXT: ['v=STSv1; id=20261207T0900;'] };
      zone[`mta-sts.${domain}`] = { A: ['127.0.0.1'] };
    }
    dns = await startDnsServer(zone);
    policy = await startPolicyServer(await ca.issue(domains.map(([d]) => `mta-sts.${d}`)));
    for (const [domain, , , mode, policyMx] of domains) policy.policies.set(`mta-sts.${domain}`, policyBody({ mode, mx: [policyMx], maxAge: 86_400 }));
    policy.policies.delete('mta-sts.broken.test');

    srv = await startServer(
      {
        trustedNetworks: ['127.0.0.0/8'],
        dns: { servers: [dns.address], timeout: '1s' },
        outbound: { port, mtaStsPort: policy.port, connectionReuse: '0s', timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
        queue: { retrySchedule: ['1s'], maxLifetime: '60s' },
      },
      // The test CA is trusted for the policy host and the MX hosts alike.
      { outboundTls: { ca: ca.cert } },
    );
    srv.tern.events.subscribe((e) => events.push(e));
  });

  after(async () => {
    await srv?.stop();
    for (const p of [good, plain, selfSigned]) await p?.close();
    await policy?.close();
    await dns?.close();
    ca?.close();
  });

  async function send(to: string): Promise<string> {
    const c = await open(srv.port('smtp'));
    try {
      return await sendMail(c, 'alice@tern.test', [to], `From: alice@tern.test\r\nTo: ${to}\r\nSubject: MTA-STS test for ${to}\r\n\r\nHello.\r\n`);
    } finally {
      c.close();
    }
  }

  const firstOf = (id: string, types: string[]) => () => events.find((e) => e.queueId === id && types.includes(e.type));
  /** The outcome of the message's first attempt. */
  const attempt = async (id: string, what: string): Promise<MessageEvent> => (await waitFor(firstOf(id, ['delivered', 'deferred', 'bounced']), 15_000, what))!;
  const receivedBy = (peer: ScriptedPeer, rcpt: string) => peer.sessions.some((s) => s.messages.length > 0 && s.commands.some((c) => c.includes(`<${rcpt}>`)));

  /** The first attempt's deferral; then the message is deleted so it does not keep retrying. */
  async function deferral(id: string): Promise<MessageEvent> {
    const e = await attempt(id, 'the first attempt');
    await srv.tern.scheduler.delete(id);
    assert.equal(e.type, 'deferred', JSON.stringify(e.data));
    return e;
  }

  it('enforce, an MX the policy names with a valid certificate: delivered over verified TLS', async () => {
    const id = await send('bob@good.test');
    const e = await attempt(id, 'the delivery');
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.verified, true);
    assert.equal(e.data.tls?.policy, 'mta-sts');
    assert.equal(e.data.relay?.host, 'mx.good.test');
    assert.ok(receivedBy(good, 'bob@good.test'));
    assert.equal(policy.requestsFor('mta-sts.good.test').length, 1);
  });

  it('enforce, an MX that offers no STARTTLS: deferred, never sent in the clear', async () => {
    const e = await deferral(await send('carol@plain.test'));
    assert.equal(e.data.reply?.enhanced, '4.7.5');
    assert.match(e.data.reply?.text ?? '', /mx\.plain\.test .*does not offer STARTTLS/);
    assert.ok(!receivedBy(plain, 'carol@plain.test'), 'nothing went over plaintext');
  });

  it('enforce, an MX with a self-signed certificate: deferred, the reason naming the certificate', async () => {
    const e = await deferral(await send('dave@selfsigned.test'));
    assert.equal(e.data.reply?.enhanced, '4.7.5');
    assert.match(e.data.reply?.text ?? '', /certificate/i);
    assert.ok(!receivedBy(selfSigned, 'dave@selfsigned.test'));
  });

  it('enforce, an MX the policy does not name: deferred without connecting to it', async () => {
    const sessions = good.sessions.length;
    const e = await deferral(await send('erin@outside.test'));
    assert.equal(e.data.reply?.enhanced, '4.7.5');
    assert.match(e.data.reply?.text ?? '', /no MX host of outside\.test is named by its MTA-STS policy/);
    assert.equal(good.sessions.length, sessions, 'no connection to the unlisted MX');
  });

  it('testing mode with a certificate that does not validate: delivered anyway, reported as unverified', async () => {
    const id = await send('frank@testing.test');
    const e = await attempt(id, 'the delivery');
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.verified, false);
    assert.equal(e.data.tls?.policy, 'mta-sts-testing');
    assert.ok(receivedBy(selfSigned, 'frank@testing.test'));
  });

  it('a policy that cannot be fetched (and none cached): delivered as without a policy (§5)', async () => {
    const id = await send('ivan@broken.test');
    const e = await attempt(id, 'the delivery');
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.policy, undefined);
    assert.ok(receivedBy(plain, 'ivan@broken.test'));
    assert.equal(policy.requestsFor('mta-sts.broken.test').length, 1);
  });

  it('the policy is fetched once and then served from the cache, also when the policy host goes away', async () => {
    const first = await send('grace@cached.test');
    assert.equal((await attempt(first, 'the first delivery')).type, 'delivered');
    policy.policies.delete('mta-sts.cached.test');
    const second = await send('heidi@cached.test');
    const e = await attempt(second, 'the second delivery');
    assert.equal(e.type, 'delivered', JSON.stringify(e.data.reply));
    assert.equal(e.data.tls?.policy, 'mta-sts');
    assert.equal(policy.requestsFor('mta-sts.cached.test').length, 1);
    // The store holds it for the next start.
    const store = openStore(srv.dataDir);
    try {
      assert.equal(store.mtaSts.get('cached.test')?.policyId, '20261207T0900');
    } finally {
      store.close();
    }
  });
});
