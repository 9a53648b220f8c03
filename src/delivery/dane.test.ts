import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { makeTestCa, type IssuedCert, type TestCa } from '../../test/helpers/test-ca.ts';
import { peerChain, tlsaToString, usableTlsa, verifyDane, type TlsaRecord } from './dane.ts';

const MX = 'mx.example.test';

let ca: TestCa;
let otherCa: TestCa;
let good: IssuedCert;
let expired: IssuedCert;
let caCert: X509Certificate;
let leaf: X509Certificate;
let expiredLeaf: X509Certificate;
let stranger: X509Certificate;
/** Set once the certificates exist: openssl makes them valid from the second they were issued. */
let now: Date;

before(async () => {
  [ca, otherCa] = await Promise.all([makeTestCa('DANE Test CA'), makeTestCa('Other CA')]);
  [good, expired] = await Promise.all([ca.issue([MX, '*.wild.example.test']), ca.issue([MX], { expired: true })]);
  caCert = new X509Certificate(ca.cert);
  leaf = new X509Certificate(good.cert);
  expiredLeaf = new X509Certificate(expired.cert);
  stranger = new X509Certificate((await otherCa.issue([MX])).cert);
  now = new Date();
});

after(() => {
  ca.close();
  otherCa.close();
});

/** The TLSA data for a certificate, computed here independently of dane.ts (RFC 6698 §2.1). */
function tlsa(usage: number, selector: number, matchingType: number, cert: X509Certificate): TlsaRecord {
  const octets = selector === 0 ? cert.raw : cert.publicKey.export({ type: 'spki', format: 'der' });
  const data = matchingType === 0 ? Buffer.from(octets) : createHash(matchingType === 1 ? 'sha256' : 'sha512').update(octets).digest();
  return { usage, selector, matchingType, data };
}

test('DANE-EE matches the leaf in every selector and matching type', () => {
  for (const [s, m] of [[1, 1], [0, 1], [1, 2], [0, 0], [1, 0], [0, 2]] as const) {
    assert.deepEqual(verifyDane([tlsa(3, s, m, leaf)], [leaf, caCert], [MX], now), { ok: true, usage: 3 }, `3 ${s} ${m}`);
  }
});

test('DANE-EE: a wrong digest fails validation', () => {
  const r = tlsa(3, 1, 1, leaf);
  r.data = Buffer.from(r.data);
  r.data[0]! ^= 1;
  const v = verifyDane([r], [leaf, caCert], [MX], now);
  assert.equal(v.ok, false);
  assert.equal(!v.ok && v.failure, 'validation-failure');
  assert.equal(verifyDane([tlsa(3, 1, 1, stranger)], [leaf, caCert], [MX], now).ok, false);
});

test('DANE-EE ignores the name and the dates (RFC 7672 §3.1.1)', () => {
  assert.deepEqual(verifyDane([tlsa(3, 1, 1, leaf)], [leaf], ['other.example.test'], now), { ok: true, usage: 3 });
  assert.deepEqual(verifyDane([tlsa(3, 1, 1, expiredLeaf)], [expiredLeaf], [MX], now), { ok: true, usage: 3 });
});

test('DANE-EE matches the leaf only, not an issuer', () => {
  const v = verifyDane([tlsa(3, 0, 1, caCert)], [leaf, caCert], [MX], now);
  assert.equal(!v.ok && v.failure, 'validation-failure');
});

test('DANE-TA: the CA, by certificate or by key, in the presented chain', () => {
  assert.deepEqual(verifyDane([tlsa(2, 0, 1, caCert)], [leaf, caCert], [MX], now), { ok: true, usage: 2 });
  assert.deepEqual(verifyDane([tlsa(2, 1, 1, caCert)], [leaf, caCert], [MX], now), { ok: true, usage: 2 });
  assert.deepEqual(verifyDane([tlsa(2, 0, 2, caCert)], [leaf, caCert], [MX], now), { ok: true, usage: 2 });
  // Out of order in the chain is fine: the issuer is found by signature.
  assert.deepEqual(verifyDane([tlsa(2, 0, 1, caCert)], [leaf, stranger, caCert], [MX], now), { ok: true, usage: 2 });
});

test('DANE-TA "2 1 0": the full key checks a chain that leaves the trust anchor out (RFC 7671 §5.2.2)', () => {
  assert.deepEqual(verifyDane([tlsa(2, 1, 0, caCert)], [leaf], [MX], now), { ok: true, usage: 2 });
  const v = verifyDane([tlsa(2, 1, 0, caCert)], [stranger], [MX], now);
  assert.equal(!v.ok && v.failure, 'validation-failure');
});

test('DANE-TA: a chain that does not present the trust anchor fails validation', () => {
  const v = verifyDane([tlsa(2, 0, 1, caCert)], [leaf], [MX], now);
  assert.equal(!v.ok && v.failure, 'validation-failure');
  // The TA is presented, but the leaf was not issued by it.
  const w = verifyDane([tlsa(2, 0, 1, caCert)], [stranger, caCert], [MX], now);
  assert.equal(!w.ok && w.failure, 'validation-failure');
  // The leaf itself is not a trust anchor.
  const x = verifyDane([tlsa(2, 0, 1, leaf)], [leaf, caCert], [MX], now);
  assert.equal(!x.ok && x.failure, 'validation-failure');
});

test('DANE-TA checks the name: SAN, wildcard in the leftmost label only', () => {
  const v = verifyDane([tlsa(2, 0, 1, caCert)], [leaf, caCert], ['other.example.test'], now);
  assert.equal(!v.ok && v.failure, 'certificate-host-mismatch');
  assert.match(!v.ok ? v.reason : '', /other\.example\.test/);
  // Any one of the reference identifiers will do (RFC 7672 §3.2.2), case and a final dot aside.
  assert.equal(verifyDane([tlsa(2, 0, 1, caCert)], [leaf, caCert], ['alias.example.test', 'MX.Example.Test.'], now).ok, true);
  assert.equal(verifyDane([tlsa(2, 0, 1, caCert)], [leaf, caCert], ['a.wild.example.test'], now).ok, true);
  assert.equal(verifyDane([tlsa(2, 0, 1, caCert)], [leaf, caCert], ['b.a.wild.example.test'], now).ok, false);
  assert.equal(verifyDane([tlsa(2, 0, 1, caCert)], [leaf, caCert], ['wild.example.test'], now).ok, false);
});

test('DANE-TA checks the dates of the leaf (RFC 7672 §3.1.2)', () => {
  const v = verifyDane([tlsa(2, 0, 1, caCert)], [expiredLeaf, caCert], [MX], now);
  assert.equal(!v.ok && v.failure, 'certificate-expired');
  // Before the leaf's notBefore is no better.
  const early = verifyDane([tlsa(2, 0, 1, caCert)], [leaf, caCert], [MX], new Date(leaf.validFromDate.getTime() - 86_400_000));
  assert.equal(!early.ok && early.failure, 'certificate-expired');
});

test('no usable records: tlsa-invalid; unusable records are ignored beside usable ones', () => {
  for (const records of [[], [tlsa(0, 0, 1, caCert), tlsa(1, 1, 1, leaf)], [{ ...tlsa(3, 1, 1, leaf), usage: 4 }], [{ ...tlsa(3, 1, 1, leaf), selector: 2 }], [{ ...tlsa(3, 1, 1, leaf), matchingType: 3 }]]) {
    const v = verifyDane(records, [leaf, caCert], [MX], now);
    assert.equal(!v.ok && v.failure, 'tlsa-invalid', JSON.stringify(records.map(tlsaToString)));
  }
  // PKIX-EE matching the leaf does not count, but the DANE-EE beside it does.
  assert.deepEqual(verifyDane([tlsa(1, 1, 1, leaf), { ...tlsa(3, 1, 1, leaf), usage: 255 }, tlsa(3, 1, 1, leaf)], [leaf], [MX], now), { ok: true, usage: 3 });
});

test('usableTlsa keeps DANE-TA/DANE-EE with known selector and matching type and well-formed data', () => {
  const ok = [tlsa(3, 1, 1, leaf), tlsa(2, 0, 2, caCert), tlsa(3, 0, 0, leaf)];
  const short = { ...tlsa(3, 1, 1, leaf), data: Buffer.alloc(31) };
  const long = { ...tlsa(3, 1, 2, leaf), data: Buffer.alloc(32) };
  const empty = { ...tlsa(3, 1, 0, leaf), data: Buffer.alloc(0) };
  assert.deepEqual(usableTlsa([...ok, tlsa(0, 0, 1, caCert), tlsa(1, 1, 1, leaf), short, long, empty]), ok);
});

test('tlsaToString is the presentation form', () => {
  assert.equal(tlsaToString({ usage: 3, selector: 1, matchingType: 1, data: Buffer.from('ab12', 'hex') }), '3 1 1 ab12');
});

test('peerChain: leaf first, then the issuers, no loops', async () => {
  const server = tls.createServer({ cert: good.chain, key: good.key }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const { port } = server.address() as AddressInfo;
    const socket = tls.connect({ host: '127.0.0.1', port, servername: MX, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    const chain = peerChain(socket);
    socket.destroy();
    assert.deepEqual(chain.map((c) => c.fingerprint256), [leaf.fingerprint256, caCert.fingerprint256]);
    assert.deepEqual(verifyDane([tlsa(2, 1, 1, caCert)], chain, [MX], now), { ok: true, usage: 2 });
  } finally {
    await new Promise((r) => server.close(r));
  }
});
