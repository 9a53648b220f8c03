import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TlsPolicy, pkixFailure, type HostDecision, type StsSource } from './tls-policy.ts';
import type { SecureAnswer, SecureResolver, TlsaRecord } from '../dns/secure.ts';
import type { StsLookup } from './mta-sts-policy.ts';
import type { MxHost } from './mx.ts';

const hosts: MxHost[] = [
  { name: 'mx1.example.test', preference: 10, addresses: ['192.0.2.1'] },
  { name: 'mx2.other.test', preference: 20, addresses: ['192.0.2.2'] },
];
const plain = { requireTls: false, tlsOptional: false };

const answer = <T>(records: T[], secure = true, rcode = 'NOERROR', canonical = ''): SecureAnswer<T> => ({ rcode, secure, records, ttl: 300, canonical });
const EE: TlsaRecord = { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 7) };
const PKIX_EE: TlsaRecord = { usage: 1, selector: 1, matchingType: 1, data: Buffer.alloc(32, 7) };

/** A scripted DNSSEC resolver: per name, the A and TLSA answers (missing: secure NXDOMAIN). */
function secure(table: Record<string, { a?: SecureAnswer<string>; tlsa?: SecureAnswer<TlsaRecord> | Error }>): SecureResolver & { asked: string[] } {
  const asked: string[] = [];
  const nx = <T>(): SecureAnswer<T> => answer<T>([], true, 'NXDOMAIN');
  return {
    asked,
    a: async (n) => (asked.push(`A ${n}`), table[n]?.a ?? nx()),
    aaaa: async (n) => (asked.push(`AAAA ${n}`), answer<string>([], table[n]?.a?.secure ?? true)),
    mx: async () => nx(),
    tlsa: async (n) => {
      asked.push(`TLSA ${n}`);
      const t = table[n.replace(/^_25\._tcp\./, '')]?.tlsa;
      if (t instanceof Error) throw t;
      return t ?? nx();
    },
  };
}

function sts(lookup: StsLookup): StsSource & { calls: number } {
  const s = { calls: 0, get: async () => (s.calls++, lookup) };
  return s;
}
const enforce = (mx: string[]): StsLookup => ({ kind: 'policy', policy: { id: '1', mode: 'enforce', mx, maxAge: 86400 }, text: `version: STSv1\nmode: enforce\n${mx.map((m) => `mx: ${m}`).join('\n')}\nmax_age: 86400\n` });
const testing = (mx: string[]): StsLookup => ({ kind: 'policy', policy: { id: '1', mode: 'testing', mx, maxAge: 86400 }, text: 'version: STSv1\nmode: testing\n' });

const tlsOf = (d: HostDecision) => {
  assert.ok('tls' in d, `${d.host.name} is usable`);
  return d.tls;
};

describe('TlsPolicy: which TLS each MX host gets', () => {
  it('no DANE and no MTA-STS: every host as configured (opportunistic), nothing enforced', async () => {
    const d = await new TlsPolicy({}).decide('example.test', hosts, plain);
    assert.equal(d.kind, 'none');
    assert.deepEqual(d.hosts.map((h) => tlsOf(h).mode), ['configured', 'configured']);
    assert.ok(d.hosts.every((h) => !tlsOf(h).enforce && tlsOf(h).verify === null));
    assert.equal(tlsOf(d.hosts[0]!).report.type, 'no-policy-found');
  });

  it('MTA-STS enforce (RFC 8461 §5.1): named hosts need TLS and a valid certificate; others are ruled out', async () => {
    const d = await new TlsPolicy({ sts: sts(enforce(['*.example.test'])) }).decide('example.test', hosts, plain);
    assert.equal(d.kind, 'sts');
    const first = tlsOf(d.hosts[0]!);
    assert.deepEqual([first.mode, first.enforce, first.authenticated, first.reuseKey], ['required', true, true, 'sts:mx1.example.test']);
    assert.equal(first.report.type, 'sts');
    assert.deepEqual(first.report.mxHosts, ['*.example.test']);
    assert.ok(first.report.strings.includes('mode: enforce'));
    const second = d.hosts[1]!;
    assert.ok('fail' in second && /not named by the MTA-STS policy/.test(second.fail.reason));
    assert.equal(d.noHosts, undefined);
  });

  it('MTA-STS enforce with no MX named: no host left, a temporary failure with the reason', async () => {
    const d = await new TlsPolicy({ sts: sts(enforce(['mail.elsewhere.test'])) }).decide('example.test', hosts, plain);
    assert.ok(d.hosts.every((h) => 'fail' in h));
    assert.match(d.noHosts!.reason, /no MX host of example\.test is named by its MTA-STS policy/);
  });

  it('MTA-STS testing (§5.2): every host, checked but not enforced; REQUIRETLS holds it to its word', async () => {
    const policy = new TlsPolicy({ sts: sts(testing(['mx1.example.test'])) });
    const d = await policy.decide('example.test', hosts, plain);
    assert.ok(d.hosts.every((h) => !tlsOf(h).enforce && tlsOf(h).verify !== null && tlsOf(h).mode === 'configured'));
    const r = await policy.decide('example.test', hosts, { requireTls: true, tlsOptional: false });
    assert.equal(tlsOf(r.hosts[0]!).enforce, true);
    assert.ok('fail' in r.hosts[1]!);
  });

  it('TLS-Required: No (RFC 8689 §4.2.2) turns an enforced policy into a reported one, but not under REQUIRETLS', async () => {
    const policy = new TlsPolicy({ sts: sts(enforce(['mx1.example.test'])) });
    const d = await policy.decide('example.test', hosts, { requireTls: false, tlsOptional: true });
    assert.ok(d.hosts.every((h) => 'tls' in h && !h.tls.enforce));
    const r = await policy.decide('example.test', hosts, { requireTls: true, tlsOptional: true });
    assert.equal(tlsOf(r.hosts[0]!).enforce, true);
  });

  it('a policy that could not be fetched: delivery as without one, the failure kept for TLS-RPT', async () => {
    const d = await new TlsPolicy({ sts: sts({ kind: 'error', failure: 'sts-webpki-invalid', reason: 'self-signed' }) }).decide('example.test', hosts, plain);
    assert.equal(d.kind, 'none');
    assert.deepEqual(d.policyFailure, { failure: 'sts-webpki-invalid', reason: 'self-signed' });
  });

  it('DANE (RFC 7672 §2.2): secure address and secure usable TLSA → TLS required and judged by the records; STS never asked', async () => {
    const s = sts(enforce(['mx2.other.test']));
    const dns = secure({ 'mx1.example.test': { a: answer(['192.0.2.1'], true, 'NOERROR', 'real.example.test'), tlsa: answer([EE]) } });
    const d = await new TlsPolicy({ dane: dns, sts: s }).decide('example.test', hosts, plain);
    assert.equal(d.kind, 'dane');
    assert.equal(s.calls, 0, 'DANE takes precedence over MTA-STS (RFC 8461 §2)');
    const first = tlsOf(d.hosts[0]!);
    assert.deepEqual([first.mode, first.enforce, first.authenticated, first.reuseKey], ['required', true, true, 'dane:mx1.example.test']);
    assert.equal(first.report.type, 'tlsa');
    assert.equal(first.report.strings[0], `3 1 1 ${'07'.repeat(32)}`);
    // The host without TLSA records stays opportunistic (DANE is per host).
    assert.equal(tlsOf(d.hosts[1]!).enforce, false);
  });

  it('DANE: an insecure address record means no TLSA lookup (§2.2.2), and the domain falls back to MTA-STS', async () => {
    const dns = secure({ 'mx1.example.test': { a: answer(['192.0.2.1'], false), tlsa: answer([EE]) } });
    const s = sts(enforce(['mx1.example.test']));
    const d = await new TlsPolicy({ dane: dns, sts: s }).decide('example.test', hosts, plain);
    assert.ok(!dns.asked.includes('TLSA _25._tcp.mx1.example.test'));
    assert.equal(d.kind, 'sts');
    assert.equal(s.calls, 1);
  });

  it('DANE: an insecure TLSA answer is ignored; secure NXDOMAIN everywhere falls back too', async () => {
    const dns = secure({ 'mx1.example.test': { a: answer(['192.0.2.1']), tlsa: answer([EE], false) } });
    const d = await new TlsPolicy({ dane: dns }).decide('example.test', hosts, plain);
    assert.equal(d.kind, 'none');
  });

  it('DANE: a TLSA lookup that fails validation (SERVFAIL) or times out rules the host out, never clear text', async () => {
    const dns = secure({
      'mx1.example.test': { a: answer(['192.0.2.1']), tlsa: answer<TlsaRecord>([], false, 'SERVFAIL') },
      'mx2.other.test': { a: answer(['192.0.2.2']), tlsa: new Error('queryTlsa ETIMEOUT') },
    });
    const d = await new TlsPolicy({ dane: dns }).decide('example.test', hosts, plain);
    assert.equal(d.kind, 'dane');
    for (const h of d.hosts) {
      assert.ok('fail' in h);
      assert.equal(h.fail.failure, 'dnssec-invalid');
    }
  });

  it('DANE: secure records that are all unusable (PKIX-EE) still mean mandatory TLS, unauthenticated (§2.2)', async () => {
    const dns = secure({ 'mx1.example.test': { a: answer(['192.0.2.1']), tlsa: answer([PKIX_EE]) } });
    const d = await new TlsPolicy({ dane: dns }).decide('example.test', hosts, plain);
    const first = tlsOf(d.hosts[0]!);
    assert.deepEqual([first.mode, first.enforce, first.authenticated, first.verify], ['required', true, false, null]);
  });

  it('DANE with TLS-Required: No: checked and reported, not enforced', async () => {
    const dns = secure({ 'mx1.example.test': { a: answer(['192.0.2.1']), tlsa: answer([EE]) } });
    const d = await new TlsPolicy({ dane: dns }).decide('example.test', hosts, { requireTls: false, tlsOptional: true });
    const first = tlsOf(d.hosts[0]!);
    assert.deepEqual([first.mode, first.enforce, first.reuseKey], ['configured', false, '']);
    assert.ok(first.verify);
  });
});

describe('pkixFailure: node verification codes as RFC 8460 §4.3 result types', () => {
  const table: [string, string][] = [
    ['ERR_TLS_CERT_ALTNAME_INVALID', 'certificate-host-mismatch'],
    ['CERT_HAS_EXPIRED', 'certificate-expired'],
    ['DEPTH_ZERO_SELF_SIGNED_CERT', 'certificate-not-trusted'],
    ['SELF_SIGNED_CERT_IN_CHAIN', 'certificate-not-trusted'],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'certificate-not-trusted'],
    ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'certificate-not-trusted'],
    ['CERT_SIGNATURE_FAILURE', 'validation-failure'],
  ];
  for (const [code, want] of table) it(`${code} → ${want}`, () => assert.equal(pkixFailure(code), want));
});
