// The streaming verifier on its own, over an in-memory resolver with node's
// contract: results whatever the chunking, abort, the pct reader, folding.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { InboundVerifier, dmarcPct, fold } from './authenticate.ts';
import { DkimSigner, dnsRecordFor, type DkimKey } from './dkim.ts';
import { nodeDnsError, type DnsResolve } from '../dns/mailauth-resolver.ts';
import { silentLogger } from '../util/log.ts';

const KEY: DkimKey = {
  domain: 'example.test',
  selector: 'ed',
  algorithm: 'ed25519-sha256',
  privateKey: crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
};
const ZONE: Record<string, unknown[]> = {
  'TXT example.test': [['v=spf1 ip4:192.0.2.1 -all']],
  'TXT _dmarc.example.test': [['v=DMARC1; p=quarantine; pct=50']],
  'TXT ed._domainkey.example.test': [[dnsRecordFor(KEY)]],
  'PTR 1.2.0.192.in-addr.arpa': ['mail.example.test'],
  'A mail.example.test': ['192.0.2.1'],
};
const resolve: DnsResolve = async (name, type) => {
  const v = ZONE[`${type} ${name}`];
  if (v) return v;
  throw nodeDnsError(Object.keys(ZONE).some((k) => k.endsWith(` ${name}`)) ? 'ENODATA' : 'ENOTFOUND', name, type);
};
const verifier = new InboundVerifier({ authservId: 'mx.tern.test', resolve, timeout: 5000, log: silentLogger });

async function signed(): Promise<Buffer> {
  const text = 'From: a@example.test\r\nTo: b@tern.test\r\nSubject: s\r\n\r\n' + 'line of body\r\n'.repeat(500);
  const s = new DkimSigner([KEY]);
  s.write(Buffer.from(text));
  return Buffer.concat([Buffer.from(await s.finish()), Buffer.from(text)]);
}

test('the same results however the message is split', async () => {
  const message = await signed();
  for (const step of [1, 7, 100, 4096, message.length]) {
    const v = verifier.begin({ ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' });
    for (let at = 0; at < message.length; at += step) v.write(message.subarray(at, at + step));
    const r = await v.finish();
    assert.deepEqual(r.dkim.map((d) => `${d.result} ${d.domain} ${d.algo}`), ['pass example.test ed25519-sha256'], `step ${step}`);
    assert.equal(r.spf.result, 'pass');
    assert.equal(r.helo, 'none');
    assert.deepEqual(r.dmarc, { result: 'pass', domain: 'example.test', policy: 'quarantine', pct: 50 });
    assert.equal(r.iprev.result, 'pass');
    assert.match(r.header, /^Authentication-Results: mx\.tern\.test;\r\n iprev=pass policy\.iprev=192\.0\.2\.1 \(mail\.example\.test\);\r\n dkim=pass /);
    assert.match(r.header, /\r\n$/);
    assert.doesNotMatch(r.header.slice(0, -2), /\r\n(?![ \t])/, 'one field');
  }
});

test('abort leaves nothing behind', async () => {
  const v = verifier.begin({ ip: '192.0.2.1', sender: '' });
  v.write(Buffer.from('From: a@example.test\r\n'));
  v.abort();
  await new Promise((r) => setTimeout(r, 20)); // an unhandled rejection would fail the run
});

test('dmarcPct and fold', () => {
  assert.equal(dmarcPct('v=DMARC1; p=reject; pct=25'), 25);
  assert.equal(dmarcPct('v=DMARC1; p=reject'), 100);
  assert.equal(dmarcPct('v=DMARC1; p=reject; pct=250'), 100);
  assert.equal(dmarcPct('v=DMARC1; p=reject; pct=x'), 100);
  const long = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
  const folded = fold(long);
  assert.equal(folded.replace(/\r\n /g, ' '), long);
  assert.ok(folded.split('\r\n').every((l) => l.length <= 160));
});
