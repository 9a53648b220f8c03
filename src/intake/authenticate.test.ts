// The streaming verifier on its own, over an in-memory resolver with node's
// contract: results whatever the chunking, abort, the pct reader, folding.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { createHook } from 'node:async_hooks';
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

// What a Verification can leave behind: mailauth's authenticate() waiting
// forever for the rest of a message that will never come (its promises, the
// stream it reads and the hashes it holds), DNS queries of the message's
// checks (SPF of MAIL FROM, DKIM keys, DMARC) started after the message was
// given up, timers, and a rejection nobody handles. abort() must end the
// first, prevent the second, and leave none of the rest. The client checks
// (iprev here) are shared per client through the cache, so they run to their
// end; they must settle quietly too.
test('abort leaves nothing behind', async () => {
  // DNS answers are held until after abort(), so the client checks are in flight when it runs.
  const held: (() => void)[] = [];
  const asked: string[] = [];
  let outstanding = 0;
  const heldResolve: DnsResolve = (name, type) => {
    asked.push(`${type} ${name}`);
    outstanding++;
    return new Promise<unknown[]>((ok) => held.push(() => ok(resolve(name, type)))).finally(() => outstanding--);
  };
  const slow = new InboundVerifier({ authservId: 'mx.tern.test', resolve: heldResolve, timeout: 5000, log: silentLogger });
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  const resourcesBefore = process.getActiveResourcesInfo().sort();

  // Every promise created by begin(), write() and abort() (mailauth's included), until it settles.
  const unsettled = new Map<number, string>();
  let recording = true;
  const hook = createHook({
    init(id, type) {
      if (recording && type === 'PROMISE') unsettled.set(id, (new Error().stack ?? '').split('\n').filter((l) => !l.includes('node:internal')).slice(2, 5).join(' |'));
    },
    promiseResolve(id) {
      unsettled.delete(id);
    },
  }).enable();
  let askedAtAbort: string[];
  try {
    // A null MAIL FROM and no HELO: the only client check is iprev (no HELO SPF), so
    // every query after abort() that is not iprev's belongs to the message's checks.
    // (The HELO SPF check would also leave one promise pending by design: mailauth's
    // elapsed-time race, whose losing timer promise is cleared, never settled.)
    const v = slow.begin({ ip: '192.0.2.1', sender: '' });
    v.write(Buffer.from('From: a@example.test\r\nDKIM-Signature: v=1; a=ed25519-sha256; d=example.test; s=ed; h=from; bh=x; b=y\r\n\r\nbody\r\n'));
    v.abort();
    recording = false;
    askedAtAbort = [...asked];
    for (let i = 0; i < 10 && held.length; i++) {
      for (const answer of held.splice(0)) answer();
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    hook.disable();
    process.off('unhandledRejection', onUnhandled);
  }
  assert.deepEqual(askedAtAbort, ['PTR 1.2.0.192.in-addr.arpa'], 'iprev was in flight when abort() ran');
  assert.deepEqual(asked, ['PTR 1.2.0.192.in-addr.arpa', 'A mail.example.test'], 'no DNS query of the message\'s checks (SPF, DKIM key, DMARC) after abort()');
  assert.equal(outstanding, 0, 'no DNS query left outstanding');
  assert.deepEqual([...unsettled.values()], [], 'every promise of the verification settled (authenticate() is not left waiting for the rest of the message)');
  assert.deepEqual(process.getActiveResourcesInfo().sort(), resourcesBefore, 'no timer or handle left');
  assert.deepEqual(unhandled, [], 'no unhandled rejection');
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
