// The DNSSEC test network itself (test/helpers/dnssec.ts): nsd + unbound with
// zones signed at test time. Asked here with plain dns-packet queries, so a
// fault in src/dns/secure.ts cannot hide a fault in the helper.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import * as packet from 'dns-packet';
import type { DecodedPacket, TlsaAnswer } from 'dns-packet';
import { requireDnssecTools, startSignedDns, type SignedDns } from './dnssec.ts';

const skip = requireDnssecTools();
const DIGEST_A = 'aa'.repeat(32);
const DIGEST_B = 'bb'.repeat(32);

let dns: SignedDns;

before(async () => {
  if (skip) return;
  dns = await startSignedDns({
    'signed.test': { kind: 'signed', records: ['@ IN MX 10 mx', 'mx IN A 127.0.0.1', `_25._tcp.mx IN TLSA 3 1 1 ${DIGEST_A}`] },
    'plain.test': { kind: 'unsigned', records: ['mx IN A 127.0.0.2'] },
    'bogus.test': { kind: 'bogus', records: ['mx IN A 127.0.0.3'] },
    'half.test': { kind: 'bogus', bogus: ['TLSA'], records: ['mx.half.test. IN A 127.0.0.4', `_25._tcp.mx IN TLSA 3 1 1 ${DIGEST_A}`] },
  });
});

after(async () => {
  await dns?.close();
});

/** A query with EDNS0 and the DO bit (RFC 3225), as a DANE client sends it. */
async function ask(name: string, type: 'A' | 'TLSA' | 'MX' | 'AAAA'): Promise<DecodedPacket> {
  const [host, port] = dns.resolver.split(':') as [string, string];
  const sock = dgram.createSocket('udp4');
  const id = randomInt(0x10000);
  try {
    return await new Promise<DecodedPacket>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer for ${name} ${type}`)), 3000);
      sock.on('message', (msg) => {
        const reply = packet.decode(msg);
        if (reply.id !== id) return;
        clearTimeout(timer);
        resolve(reply);
      });
      sock.send(
        packet.encode({
          type: 'query',
          id,
          flags: packet.RECURSION_DESIRED,
          questions: [{ type, class: 'IN', name }],
          additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: packet.DNSSEC_OK, flag_do: true, options: [] }],
        }),
        Number(port),
        host,
      );
    });
  } finally {
    sock.close();
  }
}

const rcode = (r: DecodedPacket) => (r as DecodedPacket & { rcode: string }).rcode;
const tlsaOf = (r: DecodedPacket) => r.answers?.find((x): x is TlsaAnswer => x.type === 'TLSA')?.data;
const addresses = (r: DecodedPacket) => r.answers?.flatMap((x) => (x.type === 'A' ? [x.data] : []));

test('starts nsd and unbound within a few seconds', { skip }, (t) => {
  t.diagnostic(`startup ${dns.startupMs} ms`);
  assert.ok(dns.startupMs < 5000, `startup took ${dns.startupMs} ms`);
  assert.match(dns.resolver, /^127\.0\.0\.1:\d+$/);
});

test('a signed zone: answers carry the AD bit', { skip }, async () => {
  const a = await ask('mx.signed.test', 'A');
  assert.equal(rcode(a), 'NOERROR');
  assert.equal(a.flag_ad, true);
  assert.deepEqual(addresses(a), ['127.0.0.1']);
  const tlsa = await ask('_25._tcp.mx.signed.test', 'TLSA');
  assert.equal(tlsa.flag_ad, true);
  const data = tlsaOf(tlsa);
  assert.equal(data?.usage, 3);
  assert.equal(data?.certificate.toString('hex'), DIGEST_A);
});

test('a signed zone: NXDOMAIN and NODATA are secure denials', { skip }, async () => {
  const nx = await ask('nope.signed.test', 'A');
  assert.equal(rcode(nx), 'NXDOMAIN');
  assert.equal(nx.flag_ad, true);
  const nodata = await ask('_25._tcp.nope.signed.test', 'TLSA');
  assert.equal(rcode(nodata), 'NXDOMAIN');
  assert.equal(nodata.flag_ad, true);
  const empty = await ask('mx.signed.test', 'TLSA');
  assert.equal(rcode(empty), 'NOERROR');
  assert.equal(empty.answers?.length ?? 0, 0);
  assert.equal(empty.flag_ad, true);
});

test('an unsigned zone answers without the AD bit', { skip }, async () => {
  const a = await ask('mx.plain.test', 'A');
  assert.equal(rcode(a), 'NOERROR');
  assert.equal(a.flag_ad, false);
  assert.deepEqual(addresses(a), ['127.0.0.2']);
});

test('a bogus zone gives SERVFAIL (RFC 4035 §5.5), and unbound logs why', { skip }, async () => {
  const a = await ask('mx.bogus.test', 'A');
  assert.equal(rcode(a), 'SERVFAIL');
  assert.equal(a.answers?.length ?? 0, 0);
  assert.match(dns.resolverLog(), /validation failure <mx\.bogus\.test\. A IN>/);
});

test('a zone with only its TLSA signatures broken: addresses secure, TLSA SERVFAIL', { skip }, async () => {
  const a = await ask('mx.half.test', 'A');
  assert.equal(rcode(a), 'NOERROR');
  assert.equal(a.flag_ad, true);
  assert.equal(rcode(await ask('_25._tcp.mx.half.test', 'TLSA')), 'SERVFAIL');
});

test('names outside the test zones are refused at once, never looked up on the Internet', { skip }, async () => {
  const started = performance.now();
  const r = await ask('example.com', 'A');
  assert.equal(rcode(r), 'REFUSED');
  assert.ok(performance.now() - started < 1000);
});

test('setZone: new records, re-signed, seen through the resolver at once', { skip }, async () => {
  // Cached first, so the flush is what makes the change visible.
  assert.equal(tlsaOf(await ask('_25._tcp.mx.signed.test', 'TLSA'))?.certificate.toString('hex'), DIGEST_A);
  await dns.setZone('signed.test', ['@ IN MX 10 mx', 'mx IN A 127.0.0.9', `_25._tcp.mx IN TLSA 3 1 1 ${DIGEST_B}`]);
  const tlsa = await ask('_25._tcp.mx.signed.test', 'TLSA');
  assert.equal(tlsa.flag_ad, true);
  assert.equal(tlsaOf(tlsa)?.certificate.toString('hex'), DIGEST_B);
  const a = await ask('mx.signed.test', 'A');
  assert.deepEqual(addresses(a), ['127.0.0.9']);
  // An unsigned zone changes too, and stays insecure.
  await dns.setZone('plain.test', ['mx IN A 127.0.0.22']);
  const p = await ask('mx.plain.test', 'A');
  assert.equal(p.flag_ad, false);
  assert.deepEqual(addresses(p), ['127.0.0.22']);
});
