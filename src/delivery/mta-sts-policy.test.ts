// Outbound MTA-STS policies (RFC 8461) against the real thing on loopback: a
// DNS server with the `_mta-sts` TXT records and the policy hosts' A
// records, an HTTPS policy server with certificates from a test CA, and the
// store on disk. The clock is injected, so the memory layer, max_age and
// the retry pauses are stepped over without waiting.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeTestCa, type IssuedCert, type TestCa } from '../../test/helpers/test-ca.ts';
import { startDnsServer, type DnsServer, type Zone } from '../../test/helpers/dns-server.ts';
import { policyBody, selfSignedCert, startPolicyServer, type PolicyServer } from '../../test/helpers/policy-server.ts';
import { createResolver } from '../dns/resolver.ts';
import { openStore, type Store } from '../store/store.ts';
import { createLogger, type Logger } from '../util/log.ts';
import {
  FAILED_FETCH_RETRY,
  MAX_POLICY_BYTES,
  MtaStsPolicies,
  RECHECK_INTERVAL,
  mxMatches,
  parseStsPolicy,
  stsRecordId,
  type StsLookup,
  type StsPolicy,
} from './mta-sts-policy.ts';

const DAY = 86_400;
/** Short, so the slow-server cases end quickly. */
const TIMEOUT = 1000;
/** Every policy domain the tests use; the policy server's certificate covers each `mta-sts.` name. */
const DOMAINS = [
  'enforce.test', 'idchange.test', 'keep.test', 'nocache.test', 'selfsigned.test', 'wrongname.test', 'expired.test', 'untrusted.test',
  'redirect.test', 'mediatype.test', 'huge.test', 'biglength.test', 'slow.test', 'slowheaders.test', 'syntax.test', 'lf.test', 'none.test', 'spf-only.test',
  'two.test', 'malformed.test', 'restart.test', 'flight.test', 'withdraw.test', 'refresh.test', 'refreshfail.test', 'expiry.test', 'vanish.test',
  'nohost.test', 'closed.test', 'case.test', 'servfail.test',
];

let ca: TestCa;
let cert: IssuedCert;
let dns: DnsServer;
let server: PolicyServer;
let dir: string;
let store: Store;
const zone: Zone = {};
let clock = Date.parse('2026-12-07T09:00:00Z');
const lines: string[] = [];
const log: Logger = createLogger('debug', (l) => lines.push(l));

function policies(over: { ca?: string | null; timeout?: number } = {}): MtaStsPolicies {
  const resolver = createResolver({ servers: [dns.address], timeout: 2000 }, { cacheTtl: 0 });
  return new MtaStsPolicies({
    store: store.mtaSts,
    resolver,
    log,
    port: server.port,
    ...(over.ca === null ? {} : { ca: over.ca ?? ca.cert }),
    timeout: over.timeout ?? TIMEOUT,
    now: () => clock,
  });
}

/** Publishes `_mta-sts.<domain>` with `id` (null: no record) and the policy host's address. */
function publish(domain: string, id: string | null, body?: string): void {
  if (id === null) delete zone[`_mta-sts.${domain}`];
  else zone[`_mta-sts.${domain}`] = { TXT: [`v=STSv1; id=${id};`] };
  zone[`mta-sts.${domain}`] = { A: ['127.0.0.1'] };
  if (body !== undefined) server.policies.set(`mta-sts.${domain}`, body);
}

const ENFORCE = (mx = ['mx1.example.test', '*.mx.example.test'], maxAge = DAY) => policyBody({ mode: 'enforce', mx, maxAge });

function expectPolicy(r: StsLookup): StsPolicy & { text: string } {
  assert.equal(r.kind, 'policy', JSON.stringify(r));
  if (r.kind !== 'policy') throw new Error('unreachable');
  return { ...r.policy, text: r.text };
}

function expectError(r: StsLookup, failure: string, reason?: RegExp): void {
  assert.equal(r.kind, 'error', JSON.stringify(r));
  if (r.kind !== 'error') return;
  assert.equal(r.failure, failure, r.reason);
  if (reason) assert.match(r.reason, reason);
}

async function until(fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

before(async () => {
  ca = await makeTestCa();
  cert = await ca.issue(DOMAINS.map((d) => `mta-sts.${d}`));
  server = await startPolicyServer(cert);
  dns = await startDnsServer(zone);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-mta-sts-'));
  store = openStore(dir);
});

after(async () => {
  store.close();
  await server.close();
  await dns.close();
  ca.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('fetching and caching', () => {
  it('fetches an enforce policy over validated HTTPS, stores it, and then answers from memory without DNS or HTTP', async () => {
    const body = ENFORCE();
    publish('enforce.test', 'v1', body);
    const p = policies();
    const started = clock;
    const got = expectPolicy(await p.get('Enforce.Test.'));
    assert.deepEqual(got, { id: 'v1', mode: 'enforce', mx: ['mx1.example.test', '*.mx.example.test'], maxAge: DAY, text: body });
    const reqs = server.requestsFor('mta-sts.enforce.test');
    assert.equal(reqs.length, 1);
    assert.deepEqual(reqs[0], { host: 'mta-sts.enforce.test', hostHeader: `mta-sts.enforce.test:${server.port}`, method: 'GET', path: '/.well-known/mta-sts.txt', servername: 'mta-sts.enforce.test' });
    assert.deepEqual(store.mtaSts.get('enforce.test'), { domain: 'enforce.test', policyId: 'v1', policy: body, fetchedAt: started, expiresAt: started + DAY * 1000 });

    const queries = dns.queries.length;
    for (let i = 0; i < 5; i++) expectPolicy(await p.get('enforce.test'));
    assert.equal(dns.queries.length, queries, 'a remembered policy costs no DNS');
    assert.equal(server.requestsFor('mta-sts.enforce.test').length, 1);

    // After the recheck interval the TXT record is asked again; the same id means no fetch.
    clock += RECHECK_INTERVAL;
    assert.equal(expectPolicy(await p.get('enforce.test')).id, 'v1');
    assert.ok(dns.queries.slice(queries).some((q) => q.name === '_mta-sts.enforce.test' && q.type === 'TXT'));
    assert.equal(server.requestsFor('mta-sts.enforce.test').length, 1);
    p.close();
  });

  it('fetches again when the TXT id changes', async () => {
    publish('idchange.test', 'one', ENFORCE(['a.example.test']));
    const p = policies();
    assert.deepEqual(expectPolicy(await p.get('idchange.test')).mx, ['a.example.test']);
    publish('idchange.test', 'two', policyBody({ mode: 'testing', mx: ['b.example.test'], maxAge: DAY }));
    // Within the recheck interval the remembered answer stands.
    assert.equal(expectPolicy(await p.get('idchange.test')).id, 'one');
    clock += RECHECK_INTERVAL;
    const got = expectPolicy(await p.get('idchange.test'));
    assert.deepEqual([got.id, got.mode, got.mx], ['two', 'testing', ['b.example.test']]);
    assert.equal(server.requestsFor('mta-sts.idchange.test').length, 2);
    assert.equal(store.mtaSts.get('idchange.test')!.policyId, 'two');
    p.close();
  });

  it('keeps a cached policy when the new one cannot be fetched, and tries again only after a pause', async () => {
    publish('keep.test', 'old', ENFORCE());
    const p = policies();
    expectPolicy(await p.get('keep.test'));
    server.policies.delete('mta-sts.keep.test'); // 404 from now on
    publish('keep.test', 'new');
    clock += RECHECK_INTERVAL;
    assert.equal(expectPolicy(await p.get('keep.test')).id, 'old');
    assert.equal(server.requestsFor('mta-sts.keep.test').length, 2);
    assert.ok(lines.some((l) => l.includes('MTA-STS policy fetch failed') && l.includes('keep.test') && l.includes('404')));
    assert.equal(store.mtaSts.get('keep.test')!.policyId, 'old');

    clock += FAILED_FETCH_RETRY - 1;
    assert.equal(expectPolicy(await p.get('keep.test')).id, 'old');
    assert.equal(server.requestsFor('mta-sts.keep.test').length, 2, 'no fetch before the pause is over');

    server.policies.set('mta-sts.keep.test', ENFORCE(['fixed.example.test']));
    clock += 1;
    assert.deepEqual(expectPolicy(await p.get('keep.test')).mx, ['fixed.example.test']);
    p.close();
  });

  it('keeps a cached policy when the TXT record disappears (RFC 8461 §10.2), until it expires', async () => {
    publish('vanish.test', 'v1', ENFORCE(['mx.vanish.test'], 3600));
    const p = policies();
    expectPolicy(await p.get('vanish.test'));
    publish('vanish.test', null);
    clock += RECHECK_INTERVAL;
    assert.equal(expectPolicy(await p.get('vanish.test')).id, 'v1');
    clock += 3600 * 1000;
    assert.deepEqual(await p.get('vanish.test'), { kind: 'none' });
    assert.equal(store.mtaSts.get('vanish.test'), null, 'the expired row is dropped');
    p.close();
  });

  it('a failing TXT lookup keeps a cached policy; without one it is no policy', async () => {
    publish('servfail.test', 'sf1', ENFORCE(['mx.servfail.test']));
    const p = policies();
    expectPolicy(await p.get('servfail.test'));
    zone['_mta-sts.servfail.test'] = { SERVFAIL: true };
    clock += RECHECK_INTERVAL;
    assert.equal(expectPolicy(await p.get('servfail.test')).id, 'sf1');
    assert.equal(server.requestsFor('mta-sts.servfail.test').length, 1);
    p.close();
    zone['_mta-sts.brokendns.test'] = { SERVFAIL: true };
    assert.deepEqual(await policies().get('brokendns.test'), { kind: 'none' });
  });

  it('a policy that expired is not applied', async () => {
    publish('expiry.test', 'e1', ENFORCE(['mx.expiry.test'], 600));
    const p = policies();
    expectPolicy(await p.get('expiry.test'));
    server.policies.delete('mta-sts.expiry.test');
    clock += 600 * 1000;
    // The record is still there but the fetch fails: nothing valid is cached any more, so it is an error to report.
    expectError(await p.get('expiry.test'), 'sts-policy-fetch-error', /404/);
    p.close();
  });

  it('a fetch failure without a cached policy is an error (deliver as without a policy, and report)', async () => {
    publish('nocache.test', 'x1');
    expectError(await policies().get('nocache.test'), 'sts-policy-fetch-error', /HTTP status 404/);
  });

  it('a policy host without an address is a fetch error', async () => {
    zone['_mta-sts.nohost.test'] = { TXT: ['v=STSv1; id=n1'] };
    expectError(await policies().get('nohost.test'), 'sts-policy-fetch-error', /mta-sts\.nohost\.test has no address/);
  });

  it('survives a restart: a new instance on the same store uses the stored policy without fetching', async () => {
    publish('restart.test', 'r1', ENFORCE(['mx.restart.test']));
    const first = policies();
    expectPolicy(await first.get('restart.test'));
    first.close();
    assert.equal(server.requestsFor('mta-sts.restart.test').length, 1);
    // The policy host is gone too: only the store can answer.
    server.policies.delete('mta-sts.restart.test');
    const second = policies();
    assert.deepEqual(expectPolicy(await second.get('restart.test')).mx, ['mx.restart.test']);
    assert.equal(server.requestsFor('mta-sts.restart.test').length, 1);
    second.close();
  });

  it('ten concurrent lookups of a new domain make one fetch', async () => {
    publish('flight.test', 'f1');
    server.policies.set('mta-sts.flight.test', { body: ENFORCE(), delayMs: 200 });
    const p = policies();
    const all = await Promise.all(Array.from({ length: 10 }, () => p.get('flight.test')));
    for (const r of all) assert.equal(expectPolicy(r).id, 'f1');
    assert.equal(server.requestsFor('mta-sts.flight.test').length, 1);
    p.close();
  });

  it('accepts LF line ends and media type parameters', async () => {
    publish('lf.test', 'lf1');
    server.policies.set('mta-sts.lf.test', { body: 'version: STSv1\nmode: testing\nmx: mx.lf.test\nmax_age: 86400\n', contentType: 'Text/Plain; charset=us-ascii' });
    const got = expectPolicy(await policies().get('lf.test'));
    assert.deepEqual([got.mode, got.mx, got.maxAge], ['testing', ['mx.lf.test'], DAY]);
  });

  it('mode none is no policy, and it replaces a cached one (the way a domain withdraws, §10.2)', async () => {
    publish('none.test', 'n1', policyBody({ mode: 'none', mx: [], maxAge: DAY }));
    const p = policies();
    assert.deepEqual(await p.get('none.test'), { kind: 'none' });
    assert.equal(store.mtaSts.get('none.test')!.policyId, 'n1', 'recorded, so the same id is not fetched again');
    clock += RECHECK_INTERVAL;
    assert.deepEqual(await p.get('none.test'), { kind: 'none' });
    assert.equal(server.requestsFor('mta-sts.none.test').length, 1);

    publish('withdraw.test', 'w1', ENFORCE());
    expectPolicy(await p.get('withdraw.test'));
    publish('withdraw.test', 'w2', policyBody({ mode: 'none', mx: ['mx.withdraw.test'], maxAge: DAY }));
    clock += RECHECK_INTERVAL;
    assert.deepEqual(await p.get('withdraw.test'), { kind: 'none' });
    assert.equal(store.mtaSts.get('withdraw.test')!.policyId, 'w2');
    p.close();
  });

  it('renews a policy in the background once past half its max_age, without making the caller wait', async () => {
    publish('refresh.test', 'rf1', ENFORCE(['mx.refresh.test'], 3600));
    const p = policies();
    expectPolicy(await p.get('refresh.test'));
    const fetchedAt = store.mtaSts.get('refresh.test')!.fetchedAt;
    server.policies.set('mta-sts.refresh.test', { body: ENFORCE(['mx.refresh.test'], 3600), delayMs: 800 });
    clock += 1800 * 1000 + 1;
    const t0 = Date.now();
    assert.equal(expectPolicy(await p.get('refresh.test')).id, 'rf1');
    assert.ok(Date.now() - t0 < 600, 'answered before the refresh fetch finished');
    // While the refresh is under way, lookups still get the valid policy at once.
    assert.equal(expectPolicy(await p.get('refresh.test')).id, 'rf1');
    await until(() => store.mtaSts.get('refresh.test')!.fetchedAt === clock);
    assert.equal(server.requestsFor('mta-sts.refresh.test').length, 2);
    assert.equal(store.mtaSts.get('refresh.test')!.expiresAt, clock + 3600 * 1000);
    assert.ok(clock > fetchedAt);
    p.close();
  });

  it('a background renewal that fails keeps the policy and waits before trying again', async () => {
    publish('refreshfail.test', 'rx', ENFORCE(['mx.refreshfail.test'], 3600));
    const p = policies();
    expectPolicy(await p.get('refreshfail.test'));
    server.policies.delete('mta-sts.refreshfail.test');
    clock += 1800 * 1000 + 1;
    expectPolicy(await p.get('refreshfail.test'));
    await until(() => server.requestsFor('mta-sts.refreshfail.test').length === 2);
    await until(() => lines.some((l) => l.includes('MTA-STS policy fetch failed') && l.includes('refreshfail.test')));
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 3; i++) assert.equal(expectPolicy(await p.get('refreshfail.test')).id, 'rx');
    assert.equal(server.requestsFor('mta-sts.refreshfail.test').length, 2, 'no new attempt before the pause');
    p.close();
  });

  it('after close, no background renewal starts', async () => {
    publish('closed.test', 'c1', ENFORCE(['mx.closed.test'], 3600));
    const p = policies();
    expectPolicy(await p.get('closed.test'));
    p.close();
    clock += 1800 * 1000 + 1;
    expectPolicy(await p.get('closed.test'));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(server.requestsFor('mta-sts.closed.test').length, 1);
  });
});

describe('certificates (RFC 8461 §3.3)', () => {
  it('a self-signed certificate is sts-webpki-invalid', async () => {
    publish('selfsigned.test', 's1', ENFORCE());
    server.setCertificate('mta-sts.selfsigned.test', await selfSignedCert(['mta-sts.selfsigned.test']));
    expectError(await policies().get('selfsigned.test'), 'sts-webpki-invalid', /SELF_SIGNED/);
    assert.equal(server.requestsFor('mta-sts.selfsigned.test').length, 0, 'no request is sent over an unvalidated connection');
  });

  it('a certificate for another name is sts-webpki-invalid', async () => {
    publish('wrongname.test', 'w1', ENFORCE());
    server.setCertificate('mta-sts.wrongname.test', await ca.issue(['mta-sts.elsewhere.test']));
    expectError(await policies().get('wrongname.test'), 'sts-webpki-invalid', /not valid for mta-sts\.wrongname\.test/);
  });

  it('an expired certificate is sts-webpki-invalid', async () => {
    publish('expired.test', 'x1', ENFORCE());
    server.setCertificate('mta-sts.expired.test', await ca.issue(['mta-sts.expired.test'], { expired: true }));
    expectError(await policies().get('expired.test'), 'sts-webpki-invalid', /CERT_HAS_EXPIRED/);
  });

  it('a CA we were not told to trust is sts-webpki-invalid', async () => {
    publish('untrusted.test', 'u1', ENFORCE());
    expectError(await policies({ ca: null }).get('untrusted.test'), 'sts-webpki-invalid');
  });
});

describe('what is not a policy', () => {
  it('a redirect is not followed', async () => {
    publish('redirect.test', 'r1');
    publish('enforce.test', 'v1', ENFORCE());
    server.policies.set('mta-sts.redirect.test', { status: 301, location: `https://mta-sts.enforce.test:${server.port}/.well-known/mta-sts.txt` });
    const before = server.requests.length;
    expectError(await policies().get('redirect.test'), 'sts-policy-fetch-error', /301.*redirects are not followed/);
    assert.equal(server.requests.length, before + 1);
  });

  it('another media type is sts-policy-invalid', async () => {
    publish('mediatype.test', 'm1');
    server.policies.set('mta-sts.mediatype.test', { body: ENFORCE(), contentType: 'text/html' });
    expectError(await policies().get('mediatype.test'), 'sts-policy-invalid', /text\/html/);
  });

  it('a body over the size limit is refused, counted as it streams', async () => {
    publish('huge.test', 'h1');
    server.policies.set('mta-sts.huge.test', { body: ENFORCE(), hugeBytes: 4 * 1024 * 1024 });
    expectError(await policies().get('huge.test'), 'sts-policy-invalid', new RegExp(`larger than ${MAX_POLICY_BYTES}`));
  });

  it('a Content-Length over the size limit is refused before the body', async () => {
    publish('biglength.test', 'b1');
    server.policies.set('mta-sts.biglength.test', ENFORCE() + '#'.repeat(MAX_POLICY_BYTES));
    expectError(await policies().get('biglength.test'), 'sts-policy-invalid', /larger than/);
  });

  it('a body that does not finish within the timeout is a fetch error', async () => {
    publish('slow.test', 's1');
    server.policies.set('mta-sts.slow.test', { body: ENFORCE(), stallMs: 10_000 });
    const t0 = Date.now();
    expectError(await policies().get('slow.test'), 'sts-policy-fetch-error', /within 1000 ms/);
    const took = Date.now() - t0;
    assert.ok(took >= TIMEOUT - 50 && took < TIMEOUT + 1500, `took ${took} ms`);
  });

  it('headers that do not come within the timeout are a fetch error', async () => {
    publish('slowheaders.test', 's2');
    server.policies.set('mta-sts.slowheaders.test', { body: ENFORCE(), delayMs: 10_000 });
    expectError(await policies().get('slowheaders.test'), 'sts-policy-fetch-error', /within 1000 ms/);
  });

  it('bad policy syntax is sts-policy-invalid', async () => {
    const p = policies();
    const bad = [
      'version: STSv1\r\nmode: enforce\r\nmx: mx.syntax.test\r\n', // no max_age
      'version: STSv1\r\nmode: strict\r\nmx: mx.syntax.test\r\nmax_age: 86400\r\n',
      'version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n', // enforce without mx
      'version: STSv1\r\nmode: enforce\r\nmx: mx.syntax.test\r\nmax_age: 31557601\r\n',
      'version: STSv2\r\nmode: enforce\r\nmx: mx.syntax.test\r\nmax_age: 86400\r\n',
      'mode: enforce\r\nmx: mx.syntax.test\r\nmax_age: 86400\r\n',
      '<html>not a policy</html>',
    ];
    for (const [i, body] of bad.entries()) {
      publish('syntax.test', `bad${i}`, body);
      clock += FAILED_FETCH_RETRY;
      expectError(await p.get('syntax.test'), 'sts-policy-invalid', /not valid/);
    }
    p.close();
  });
});

describe('the _mta-sts record (RFC 8461 §3.1)', () => {
  it('no record: no policy, and nothing is fetched', async () => {
    zone['mta-sts.case.test'] = { A: ['127.0.0.1'] };
    server.policies.set('mta-sts.case.test', ENFORCE());
    assert.deepEqual(await policies().get('case.test'), { kind: 'none' });
    assert.equal(server.requestsFor('mta-sts.case.test').length, 0);
  });

  it('records that are not v=STSv1 are ignored', async () => {
    zone['_mta-sts.spf-only.test'] = { TXT: ['v=spf1 -all', 'v=STSv10; id=1'] };
    assert.deepEqual(await policies().get('spf-only.test'), { kind: 'none' });
  });

  it('two v=STSv1 records: no policy (§3.1 "MUST assume the Policy Domain does not implement MTA-STS")', async () => {
    publish('two.test', 'a', ENFORCE());
    zone['_mta-sts.two.test'] = { TXT: ['v=STSv1; id=a;', 'v=STSv1; id=b;', 'v=spf1 -all'] };
    assert.deepEqual(await policies().get('two.test'), { kind: 'none' });
    assert.equal(server.requestsFor('mta-sts.two.test').length, 0);
  });

  it('a malformed record: no policy', async () => {
    publish('malformed.test', null, ENFORCE());
    zone['_mta-sts.malformed.test'] = { TXT: ['v=STSv1; id=this-has-dashes;'] };
    assert.deepEqual(await policies().get('malformed.test'), { kind: 'none' });
    assert.equal(server.requestsFor('mta-sts.malformed.test').length, 0);
  });

  it('stsRecordId follows the ABNF', () => {
    const cases: [string, string | null][] = [
      ['v=STSv1; id=20160831085700Z;', '20160831085700Z'],
      ['v=STSv1;id=abc', 'abc'],
      ['v=STSv1 ;\tid=abc ; ', 'abc'],
      ['v=STSv1; id=abc; ext_1.a-b=value', 'abc'],
      ['v=STSv1; ext=1; id=abc', 'abc'],
      ['v=STSv1; id=first; id=second', 'first'],
      ['v=STSv1; id=' + 'a'.repeat(32), 'a'.repeat(32)],
      ['v=STSv1; id=' + 'a'.repeat(33), null],
      ['v=STSv1; id=', null],
      ['v=STSv1; id=a_b', null],
      ['v=STSv1;', null],
      ['v=STSv1; ext=1', null],
      ['v=STSv1; id=abc;; ', null],
      ['v=STSv1; id=abc; bad ext=1', null],
      ['v=STSv1; id=abc; ext=a;b', null],
      ['v=stsv1; id=abc', null],
      ['v=STSv2; id=abc', null],
    ];
    for (const [record, id] of cases) assert.equal(stsRecordId(record), id, record);
  });
});

describe('mxMatches (RFC 8461 §4.1)', () => {
  const policy: StsPolicy = { id: 'x', mode: 'enforce', mx: ['mail.example.com', '*.example.net'], maxAge: DAY };
  const cases: [string, boolean][] = [
    ['mail.example.com', true],
    ['MAIL.Example.COM', true],
    ['mail.example.com.', true],
    ['other.example.com', false],
    ['example.com', false],
    ['mx1.example.net', true],
    ['MX1.EXAMPLE.NET.', true],
    ['example.net', false],
    ['a.b.example.net', false],
    ['.example.net', false],
    ['*.example.net', false],
    ['mx1.example.net.evil.test', false],
    ['', false],
  ];
  for (const [host, expected] of cases) {
    it(`${JSON.stringify(host)} ${expected ? 'matches' : 'does not match'}`, () => assert.equal(mxMatches(policy, host), expected));
  }

  it('uses the patterns as parseStsPolicy gives them (lower case)', () => {
    const p = parseStsPolicy('version: STSv1\r\nmode: enforce\r\nmx: MX.Example.ORG\r\nmx: *.Backup.Example.ORG\r\nmax_age: 60\r\n', 'i');
    assert.notEqual(typeof p, 'string');
    if (typeof p === 'string') return;
    assert.ok(mxMatches(p, 'mx.example.org'));
    assert.ok(mxMatches(p, 'b1.backup.example.org'));
  });
});
